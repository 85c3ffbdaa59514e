"""A generated web traffic set and the Stats API answers for it, computed
independently of tally with DuckDB.

    python3 web_reference.py SEED NOW_SECONDS OUT_DIR

writes OUT_DIR/traffic.ndjson (tally's backfill format: a tracker payload
per line with timestamp, user_agent and ip) and prints JSON:
{"lines", "bots", "unknown_site", "checks": [{"endpoint", "params",
"expected"}]}. Expected values are unrounded (rates, durations, ratios),
so the test can check tally's rounding; counts are exact.

The generator knows every event's visitor, source, device and browser by
construction (it chose them); visits, bounces, durations, entry and exit
pages are computed here from the events with SQL window functions, by
Plausible's definitions: a visitor is (user agent, address, site, UTC day);
a visit ends after more than 30 minutes without an event; engagement events
are not events and touch no visit; a bounce is a visit of one page view and
nothing else; the duration is last event - first event; a visit counts in
the period it started in.
"""

import datetime
import json
import os
import random
import sys

import duckdb

SITE = "shop.test"
OTHER = "other.test"
AGENTS = {
    "Chrome": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.6099.109 Safari/537.36",
    "Firefox": "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0",
    "Safari": "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Safari/605.1.15",
    # The same version as Chrome's: versions are told apart by browser.
    "Edge": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36 Edg/120.0.2210.91",
}
# Where each agent states its own version (major.minor is reported).
VERSION_TOKEN = {"Chrome": "Chrome/", "Firefox": "Firefox/", "Safari": "Version/", "Edge": "Edg/"}


def version_of(browser):
    rest = AGENTS[browser].split(VERSION_TOKEN[browser], 1)[1]
    return ".".join(rest.split(" ")[0].split(".")[:2])
BOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
# Plausible's screen-size breakpoints: < 576 mobile, < 992 tablet, < 1440
# laptop, else desktop.
WIDTHS = {375: "Mobile", 800: "Tablet", 1280: "Laptop", 1920: "Desktop"}
PAGES = ["/", "/pricing", "/blog/a", "/blog/b", "/docs"]
# How a visit arrives: (query string of its first page, referrer, the
# source Plausible's rules give: ref/source/utm_source, else the
# referrer's host without www., else direct).
ARRIVALS = [
    ("?utm_source=newsletter&utm_campaign=spring", None, "newsletter"),
    ("?ref=producthunt", "https://www.producthunt.com/posts/x", "producthunt"),
    ("", "https://blog.example.org/post/1", "blog.example.org"),
    ("?utm_source=ads&utm_campaign=summer", None, "ads"),
    ("", None, None),
]


def generate(seed, now, out):
    rng = random.Random(seed)
    lines, rows = [], []
    bots = unknown = 0
    seq = 0
    for v in range(1500):
        browser = rng.choice(sorted(AGENTS))
        ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
        width = rng.choice(sorted(WIDTHS))
        used = set()  # one event per second per visitor: time order is total
        for _ in range(rng.choice([1, 1, 2, 3])):
            ts = now - rng.randrange(60, 9 * 86400)
            query, referrer, source = rng.choice(ARRIVALS)
            page = rng.choice(PAGES)
            for i in range(rng.choice([1, 1, 2, 3, 4, 6])):
                while ts in used:
                    ts += 1
                if ts >= now - 30:
                    break
                used.add(ts)
                first = i == 0
                k = rng.random()
                if first:
                    name = "pageview" if k < 0.9 else "Signup"
                else:
                    name = "pageview" if k < 0.65 else ("engagement" if k < 0.8 else rng.choice(["Signup", "Download"]))
                    if name == "pageview":
                        page = rng.choice(PAGES)
                payload = {
                    "name": name,
                    "url": f"https://{SITE}{page}{query if first else ''}",
                    "domain": SITE,
                    "w": width,
                    "timestamp": ts,
                    "user_agent": AGENTS[browser],
                    "ip": ip,
                }
                # Later pages are reached from the site itself (direct).
                payload["referrer"] = referrer if first else f"https://{SITE}/"
                if payload["referrer"] is None:
                    del payload["referrer"]
                plan = None
                if name in ("Signup", "Download") and rng.random() < 0.7:
                    plan = rng.choice(["free", "pro"])
                    payload["props"] = {"plan": plan}
                if name == "engagement":
                    payload["sd"] = rng.randrange(100)
                    payload["e"] = rng.randrange(1, 60000)
                lines.append(payload)
                seq += 1
                rows.append({
                    "seq": seq, "ts": ts, "ua": AGENTS[browser], "ip": ip, "name": name,
                    "page": page, "plan": plan, "browser": browser, "browser_version": version_of(browser),
                    "device": WIDTHS[width],
                    # The source and campaign this event would give a visit
                    # it starts.
                    "source": source if first else None,
                    "campaign": (query.split("utm_campaign=")[1] if first and "utm_campaign=" in query else None),
                })
                # Mostly a few minutes apart; sometimes more than 30
                # minutes (a new visit).
                ts += rng.choice([rng.randrange(5, 600), rng.randrange(5, 1500), rng.randrange(1801, 4000)])
    # Noise the answers must not include: another site, bots, unknown sites.
    for i in range(200):
        ts = now - rng.randrange(60, 9 * 86400)
        lines.append({"n": "pageview", "u": f"https://{OTHER}/x", "d": OTHER,
                      "timestamp": ts, "user_agent": AGENTS["Chrome"], "ip": f"10.9.9.{i % 250 + 1}"})
    for i in range(50):
        ts = now - rng.randrange(60, 9 * 86400)
        lines.append({"n": "pageview", "u": f"https://{SITE}/", "d": SITE,
                      "timestamp": ts, "user_agent": BOT, "ip": "10.8.8.8"})
        bots += 1
    for i in range(30):
        ts = now - rng.randrange(60, 9 * 86400)
        lines.append({"n": "pageview", "u": "https://nobody.test/", "d": "nobody.test",
                      "timestamp": ts, "user_agent": AGENTS["Firefox"], "ip": "10.7.7.7"})
        unknown += 1
    rng.shuffle(lines)
    with open(os.path.join(out, "traffic.ndjson"), "w") as f:
        for p in lines:
            f.write(json.dumps(p) + "\n")
    return rows, len(lines), bots, unknown


def load(rows):
    db = duckdb.connect()
    db.execute("""CREATE TABLE raw (seq BIGINT, ts BIGINT, ua VARCHAR, ip VARCHAR, name VARCHAR,
        page VARCHAR, plan VARCHAR, browser VARCHAR, browser_version VARCHAR, device VARCHAR,
        source VARCHAR, campaign VARCHAR)""")
    db.executemany("INSERT INTO raw VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", [
        (r["seq"], r["ts"], r["ua"], r["ip"], r["name"], r["page"], r["plan"], r["browser"],
         r["browser_version"], r["device"], r["source"], r["campaign"]) for r in rows])
    # The visitor: agent, address, site and UTC day.
    db.execute("""CREATE TABLE ev AS SELECT *,
        ua || '|' || ip || '|' || CAST(CAST(to_timestamp(ts) AT TIME ZONE 'UTC' AS DATE) AS VARCHAR) AS vkey
        FROM raw""")
    # Visits from the events that are not engagement.
    db.execute("""CREATE TABLE ev2 AS SELECT *,
        ts - lag(ts) OVER (PARTITION BY vkey ORDER BY ts) AS gap
        FROM ev WHERE name <> 'engagement'""")
    db.execute("""CREATE TABLE ev3 AS SELECT *,
        sum(CASE WHEN gap IS NULL OR gap > 1800 THEN 1 ELSE 0 END)
            OVER (PARTITION BY vkey ORDER BY ts ROWS UNBOUNDED PRECEDING) AS sn
        FROM ev2""")
    # A visit's attributes are its first event's (NULLs included).
    db.execute("""CREATE TABLE ev4 AS SELECT *,
        first_value(source) OVER w AS vsource, first_value(campaign) OVER w AS vcampaign,
        first_value(device) OVER w AS vdevice, first_value(browser) OVER w AS vbrowser,
        first_value(browser_version) OVER w AS vbrowser_version,
        first_value(page) OVER w AS ventry
        FROM ev3 WINDOW w AS (PARTITION BY vkey, sn ORDER BY ts ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)""")
    db.execute("""CREATE TABLE visits AS SELECT vkey, sn,
        min(ts) AS start, max(ts) AS last,
        any_value(ventry) AS entry_page,
        arg_max(page, ts) FILTER (WHERE name = 'pageview') AS exit_page,
        count(*) FILTER (WHERE name = 'pageview') AS pv, count(*) AS events,
        any_value(vdevice) AS device, any_value(vbrowser) AS browser,
        any_value(vbrowser_version) AS browser_version,
        any_value(vsource) AS source, any_value(vcampaign) AS utm_campaign
        FROM ev4 GROUP BY vkey, sn""")
    # Every non-engagement event with its visit's attributes.
    db.execute("CREATE TABLE evv AS SELECT * FROM ev4")
    return db


def day_range(p, today):
    d = lambda s: datetime.date.fromisoformat(s)
    date = d(p["date"]) if "date" in p and p.get("period") != "custom" else today
    period = p.get("period", "30d")
    one = datetime.timedelta(days=1)
    if period == "day":
        return date, date + one
    if period == "7d":
        return date - 6 * one, date + one
    if period == "30d":
        return date - 29 * one, date + one
    if period == "custom":
        a, b = p["date"].split(",")
        return d(a), d(b) + one
    raise ValueError(period)


def secs(day):
    return int(datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc).timestamp())


def where_events(cond):
    return {
        None: "TRUE",
        "newsletter": "vsource = 'newsletter'",
        "blog": "page LIKE '/blog/%'",
        "mobile": "vdevice = 'Mobile'",
    }[cond]


def where_visits(cond):
    return {None: "TRUE", "newsletter": "source = 'newsletter'", "mobile": "device = 'Mobile'"}[cond]


def metrics_of(db, lo, hi, metrics, cond=None, ekey=None, vkey=None):
    """Rows of metric values: for the whole range (no key) or per key."""
    out = {}
    def put(k, m, v):
        out.setdefault(k, {})[m] = v
    ev_metrics = [m for m in metrics if m in ("visitors", "pageviews", "events")]
    vi_metrics = [m for m in metrics if m not in ev_metrics]
    if vkey is None and (ev_metrics or (ekey and "visits" in metrics)):
        key = ekey or "'all'"
        for k, visitors, pv, evs, vis in db.execute(f"""SELECT {key}, count(DISTINCT vkey),
                count(*) FILTER (WHERE name = 'pageview'), count(*), count(DISTINCT vkey || '#' || sn)
                FROM evv WHERE ts >= ? AND ts < ? AND {where_events(cond)} GROUP BY 1""", [lo, hi]).fetchall():
            put(k, "visitors", visitors)
            put(k, "pageviews", pv)
            put(k, "events", evs)
            if ekey:
                put(k, "visits", vis)
    if ekey == "page" and "bounce_rate" in metrics:
        for k, rate in db.execute(f"""SELECT entry_page, 100.0 * count(*) FILTER (WHERE pv = 1 AND events = 1) / count(*)
                FROM visits WHERE start >= ? AND start < ? GROUP BY 1""", [lo, hi]).fetchall():
            if k in out:
                put(k, "bounce_rate", rate)
        for k in out:
            out[k].setdefault("bounce_rate", 0)
    if not ekey and (vi_metrics or vkey):
        key = vkey or "'all'"
        for k, visitors, visits, bounce, dur, pv, evs in db.execute(f"""SELECT {key}, count(DISTINCT vkey), count(*),
                100.0 * count(*) FILTER (WHERE pv = 1 AND events = 1) / count(*), avg(last - start),
                sum(pv), sum(events)
                FROM visits WHERE start >= ? AND start < ? AND {where_visits(cond)} GROUP BY 1""", [lo, hi]).fetchall():
            if vkey:
                put(k, "visitors", visitors)
                put(k, "pageviews", int(pv))
                put(k, "events", int(evs))
            put(k, "visits", visits)
            put(k, "bounce_rate", bounce)
            put(k, "visit_duration", dur)
            put(k, "views_per_visit", pv / visits)
    return {k: {m: v[m] for m in metrics if m in v} for k, v in out.items()}


ZERO = {"visitors": 0, "visits": 0, "pageviews": 0, "events": 0, "bounce_rate": 0,
        "visit_duration": 0, "views_per_visit": 0}


def main():
    seed, now, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    rows, n, bots, unknown = generate(seed, now, out)
    db = load(rows)
    today = datetime.datetime.fromtimestamp(now, datetime.timezone.utc).date()
    all_metrics = ["visitors", "visits", "pageviews", "views_per_visit", "bounce_rate", "visit_duration", "events"]
    checks = []

    def aggregate(params, cond=None):
        lo, hi = day_range(params, today)
        r = metrics_of(db, secs(lo), secs(hi), params["metrics"].split(","), cond).get("all", {})
        expected = {m: r.get(m, 0) for m in params["metrics"].split(",")}
        checks.append({"endpoint": "aggregate", "params": dict(params, site_id=SITE), "expected": expected})

    busiest = db.execute("SELECT CAST(to_timestamp(ts) AT TIME ZONE 'UTC' AS DATE) d FROM ev GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    m = ",".join(all_metrics)
    for params in [
        {"period": "30d", "metrics": m},
        {"period": "7d", "metrics": m},
        {"period": "day", "metrics": m},
        {"period": "day", "date": busiest.isoformat(), "metrics": m},
        {"period": "custom", "date": f"{(today - datetime.timedelta(days=5)).isoformat()},{(today - datetime.timedelta(days=2)).isoformat()}", "metrics": m},
    ]:
        aggregate(params)
    aggregate({"period": "30d", "metrics": m, "filters": "visit:source==newsletter"}, "newsletter")
    aggregate({"period": "30d", "metrics": "visitors,pageviews,events", "filters": "event:page==/blog/**"}, "blog")

    def timeseries(params, interval_days):
        lo, hi = day_range(params, today)
        ms = params["metrics"].split(",")
        results = []
        if interval_days:
            d = lo
            while d < hi:
                r = metrics_of(db, secs(d), secs(d + datetime.timedelta(days=1)), ms).get("all", {})
                results.append({"date": d.isoformat(), **{k: r.get(k, 0) for k in ms}})
                d += datetime.timedelta(days=1)
        else:
            for h in range(24):
                a = secs(lo) + h * 3600
                r = metrics_of(db, a, a + 3600, ms).get("all", {})
                results.append({"date": f"{lo.isoformat()} {h:02d}:00:00", **{k: r.get(k, 0) for k in ms}})
        checks.append({"endpoint": "timeseries", "params": dict(params, site_id=SITE), "expected": results})

    timeseries({"period": "7d", "metrics": m}, True)
    timeseries({"period": "30d", "interval": "date", "metrics": "visitors,pageviews,visits"}, True)
    timeseries({"period": "day", "date": busiest.isoformat(), "metrics": m}, False)

    def breakdown(prop, metrics, ekey=None, vkey=None, none="(none)", cond=None, filters=None, parent=None):
        lo, hi = day_range({"period": "30d"}, today)
        name = prop.split(":")[-1]
        if parent:
            # Grouped by the parent (a version's browser) too: both in each row.
            vkey = f"{parent} || '\t' || {vkey}"
        rows = metrics_of(db, secs(lo), secs(hi), metrics.split(","), cond, ekey, vkey)
        def key(k):
            if parent:
                p, v = k.split("\t")
                return {parent: p, name: v}
            return {name: k if k is not None else none}
        expected = [{**key(k), **v} for k, v in rows.items()]
        params = {"period": "30d", "property": prop, "metrics": metrics, "limit": "1000"}
        if filters:
            params["filters"] = filters
        checks.append({"endpoint": "breakdown", "params": dict(params, site_id=SITE), "expected": expected})

    visit_metrics = "visitors,visits,bounce_rate,visit_duration,pageviews,events,views_per_visit"
    breakdown("event:page", "visitors,visits,pageviews,events,bounce_rate", ekey="page")
    breakdown("event:name", "visitors,events,visits", ekey="name")
    breakdown("event:props:plan", "visitors,events", ekey="plan")
    breakdown("visit:source", visit_metrics, vkey="source", none="Direct / None")
    breakdown("visit:entry_page", visit_metrics, vkey="entry_page")
    breakdown("visit:exit_page", visit_metrics, vkey="exit_page")
    breakdown("visit:device", visit_metrics, vkey="device")
    breakdown("visit:browser", visit_metrics, vkey="browser")
    breakdown("visit:browser_version", visit_metrics, vkey="browser_version", parent="browser")
    breakdown("visit:utm_campaign", visit_metrics, vkey="utm_campaign")
    breakdown("visit:source", "visitors,visits,bounce_rate", vkey="source", none="Direct / None",
              cond="mobile", filters="visit:device==Mobile")
    print(json.dumps({"lines": n, "bots": bots, "unknown_site": unknown, "checks": checks}, default=float))


if __name__ == "__main__":
    main()
