"""Stats API latency over a large web traffic set, with DuckDB in the same
run on the same events.

    tally serve --data-dir D --listen 127.0.0.1:PORT --web-site bench.test --query-cache-bytes 0
    python3 bench/web_stats.py --url http://127.0.0.1:PORT --events 100000000 [--rounds 5]

1. Generates N tracker events (visits of 1-5 events from a pool of
   visitors, 200 pages with a skewed popularity, 8 sources, 4 screen widths,
   spread over the last 30 days) and sends them to tally's backfill as a
   migration would, a day at a time, oldest first, in requests of up to
   500,000 lines (a visitor's events stay in one request); the same events
   go into a DuckDB table.
2. Times Plausible Stats API requests against tally: aggregate, time series
   and breakdowns, each for 20 different end dates (`date`), ROUNDS times
   (start tally with `--query-cache-bytes 0` so no answer is a cached one:
   with the cache, only the first round computes); then the same questions
   against DuckDB over its table, once per date (event-level ones: DuckDB
   has no visits table, it would compute visits per query).
3. Prints p50/p99 per question and source, and the load time.
"""

import argparse
import json
import random
import statistics
import sys
import time
import urllib.parse
import urllib.request

import duckdb
import pyarrow as pa

PAGES = [f"/p/{i}" for i in range(200)]
PAGE_WEIGHTS = [1.0 / (i + 1) for i in range(200)]
SOURCES = [("", "https://www.google.com/", "Google"), ("?utm_source=newsletter", "", "newsletter"),
           ("", "https://news.ycombinator.com/", "Hacker News"), ("", "https://github.com/", "GitHub"),
           ("?ref=partner", "", "partner"), ("", "https://blog.example.org/x", "blog.example.org"),
           ("", "https://www.bing.com/", "Bing"), ("", "", None)]
AGENTS = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
          "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
          "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"]
WIDTHS = [390, 820, 1280, 1920]
SITE = "bench.test"
CHUNK = 500_000
DAYS = 30


def post(url, body, key=None):
    req = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/x-ndjson"})
    with urllib.request.urlopen(req, timeout=3600) as r:
        return json.loads(r.read())


def get(url):
    t = time.perf_counter()
    with urllib.request.urlopen(url, timeout=600) as r:
        body = r.read()
    return time.perf_counter() - t, json.loads(body)


def generate(rng, n, lo, hi, first_visitor):
    """About n events of visits starting in [lo, hi) (seconds), as (NDJSON
    bytes, arrow table, events, visitors)."""
    lines = []
    cols = {k: [] for k in ["ts", "visitor", "name", "pathname", "source", "device"]}
    v = first_visitor
    while len(lines) < n:
        v += 1
        ua = rng.randrange(len(AGENTS))
        # Every visitor its own address, and all its events in one request.
        ip = f"{10 + (v >> 24)}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}"
        width = rng.choice(WIDTHS)
        device = "Mobile" if width < 576 else "Tablet" if width < 992 else "Laptop" if width < 1440 else "Desktop"
        ts = rng.randrange(lo, hi)
        query, referrer, source = rng.choice(SOURCES)
        for i in range(rng.randrange(1, 6)):
            page = rng.choices(PAGES, PAGE_WEIGHTS)[0]
            name = "pageview" if i == 0 or rng.random() < 0.85 else "Signup"
            r = f',"r":"{referrer}"' if i == 0 and referrer else ""
            q = query if i == 0 else ""
            lines.append(f'{{"n":"{name}","u":"https://{SITE}{page}{q}","d":"{SITE}","w":{width},"timestamp":{ts},"user_agent":"{AGENTS[ua]}","ip":"{ip}"{r}}}')
            day = ts // 86400
            cols["ts"].append(ts * 1_000_000)
            cols["visitor"].append(f"{ua}|{ip}|{day}")
            cols["name"].append(name)
            cols["pathname"].append(page)
            cols["source"].append(source)
            cols["device"].append(device)
            ts += rng.randrange(10, 600)
            if ts >= hi:
                break
    table = pa.table({
        "ts": pa.array(cols["ts"], pa.timestamp("us", tz="UTC")),
        **{k: pa.array(cols[k], pa.string()) for k in ["visitor", "name", "pathname", "source", "device"]},
    })
    return ("\n".join(lines) + "\n").encode(), table, len(lines), v


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--events", type=int, default=100_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--ask-only", action="store_true",
                    help="ask the questions of a server loaded earlier (no load, no DuckDB)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="times each question is asked per date (p99 over 20 x ROUNDS answers)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    now = int(time.time())
    db = duckdb.connect()
    db.execute("CREATE TABLE ev (ts TIMESTAMPTZ, visitor VARCHAR, name VARCHAR, pathname VARCHAR, source VARCHAR, device VARCHAR)")
    t0, send_s, sent, visitors = time.perf_counter(), 0.0, 0, 0

    def load(body, table, n):
        nonlocal send_s
        t = time.perf_counter()
        r = post(f"{args.url}/v1/web/backfill", body)
        send_s += time.perf_counter() - t
        db.register("chunk", table)
        db.execute("INSERT INTO ev SELECT * FROM chunk")
        db.unregister("chunk")
        print(f"  loaded {sent:,} events ({r['visits']:,} visits in the last request); "
              f"tally backfill {sent / send_s:,.0f} events/s", file=sys.stderr, flush=True)

    # A migration sends its history in time order, a day at a time (as
    # exports are made): every request holds the visits of one day.
    per_day = -(-args.events // DAYS)
    for d in range(DAYS, 0, -1) if not args.ask_only else []:
        lo, hi = now - d * 86400, min(now - 120, now - (d - 1) * 86400)
        day_sent = 0
        while day_sent < per_day and sent < args.events:
            want = min(CHUNK, per_day - day_sent, args.events - sent)
            body, table, n, visitors = generate(rng, want, lo, hi, visitors)
            day_sent += n
            sent += n
            load(body, table, n)
    if not args.ask_only:
        print(f"loaded {sent:,} events in {time.perf_counter() - t0:.0f} s "
              f"(tally's backfill: {send_s:.0f} s, {sent / send_s:,.0f} events/s)")

    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    dates = [time.strftime("%Y-%m-%d", time.gmtime(now - d * 86400)) for d in range(20)]
    questions = [
        ("aggregate 30d: visitors, visits, pageviews, bounce_rate, visit_duration",
         "aggregate", {"period": "30d", "metrics": "visitors,visits,pageviews,bounce_rate,visit_duration"},
         """SELECT count(DISTINCT visitor), count(*) FILTER (WHERE name = 'pageview') FROM ev
            WHERE ts >= TIMESTAMPTZ '{lo}' AND ts < TIMESTAMPTZ '{hi}'"""),
        ("timeseries 30d by day: visitors, pageviews",
         "timeseries", {"period": "30d", "metrics": "visitors,pageviews"},
         """SELECT date_trunc('day', ts) d, count(DISTINCT visitor), count(*) FILTER (WHERE name = 'pageview') FROM ev
            WHERE ts >= TIMESTAMPTZ '{lo}' AND ts < TIMESTAMPTZ '{hi}' GROUP BY d ORDER BY d"""),
        ("breakdown 30d by page (top 10): visitors, pageviews",
         "breakdown", {"period": "30d", "property": "event:page", "metrics": "visitors,pageviews", "limit": "10"},
         """SELECT pathname, count(DISTINCT visitor) v, count(*) FILTER (WHERE name = 'pageview') FROM ev
            WHERE ts >= TIMESTAMPTZ '{lo}' AND ts < TIMESTAMPTZ '{hi}' GROUP BY pathname ORDER BY v DESC LIMIT 10"""),
        ("breakdown 30d by source: visitors, visits, bounce_rate",
         "breakdown", {"period": "30d", "property": "visit:source", "metrics": "visitors,visits,bounce_rate"},
         None),
        ("aggregate 7d: visitors, pageviews",
         "aggregate", {"period": "7d", "metrics": "visitors,pageviews"},
         """SELECT count(DISTINCT visitor), count(*) FILTER (WHERE name = 'pageview') FROM ev
            WHERE ts >= TIMESTAMPTZ '{lo}' AND ts < TIMESTAMPTZ '{hi}'"""),
        ("breakdown 30d by device, filtered by source (raw events; one round)",
         "breakdown", {"period": "30d", "property": "visit:device", "metrics": "visitors,visits", "filters": "visit:source==Google"},
         None),
    ]
    # The raw scan takes seconds per answer: asked once per date.
    raw = {questions[-1][0]}
    days = {"30d": 30, "7d": 7}
    print(f"{'question':74} {'tally p50':>10} {'p99':>8} {'DuckDB p50':>11} {'p99':>8}")
    for label, endpoint, params, sql in questions:
        times, dtimes = [], []
        rounds = 1 if label in raw else args.rounds
        for r, d in ((r, d) for r in range(rounds) for d in dates):
            q = dict(params, site_id=SITE, date=d)
            dt, v = get(f"{args.url}/api/v1/stats/{endpoint}?{urllib.parse.urlencode(q)}")
            assert "results" in v, v
            times.append(dt)
            if sql and not args.ask_only and r == 0:
                hi_day = time.strptime(d, "%Y-%m-%d")
                hi = time.strftime("%Y-%m-%d", time.gmtime(time.mktime(hi_day) - time.timezone + 86400))
                lo = time.strftime("%Y-%m-%d", time.gmtime(time.mktime(hi_day) - time.timezone - (days[params["period"]] - 1) * 86400))
                t = time.perf_counter()
                db.execute(sql.format(lo=lo, hi=hi)).fetchall()
                dtimes.append(time.perf_counter() - t)
        ms = lambda x: f"{x * 1000:.1f} ms"
        print(f"{label:74} {ms(pct(times, .5)):>10} {ms(pct(times, .99)):>8} "
              f"{ms(pct(dtimes, .5)) if dtimes else '-':>11} {ms(pct(dtimes, .99)) if dtimes else '-':>8}", flush=True)


if __name__ == "__main__":
    main()
