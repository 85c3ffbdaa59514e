"""The dashboard query from a rollup vs DuckDB from raw Parquet, then
freshness. Run by bench/rollup.sh against a loaded server.

usage: rollup.py TALLY_URL DATA_DIR STREAM
"""
import datetime, json, statistics, sys, time, urllib.error, urllib.request

url, data_dir, stream = sys.argv[1], sys.argv[2], sys.argv[3]
glob = f"{data_dir}/segments/{stream}/**/*.parquet"


def post(path, body):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        sys.exit(f"{path} {json.dumps(body)}: {e.code} {e.read().decode()}")


def lat(f, n):
    f()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append((time.perf_counter() - t) * 1000)
    out.sort()
    return statistics.median(out), out[int(len(out) * 0.99) - 1 if len(out) >= 100 else -1]


import duckdb
con = duckdb.connect()
con.execute(f"CREATE VIEW T AS SELECT * FROM read_parquet('{glob}')")
n, hi = con.execute("SELECT count(*), epoch_us(max(ts)) FROM T").fetchone()
# The last whole day in the data.
day_us = 86_400_000_000
d1 = hi // day_us * day_us
d0 = d1 - day_us
iso = lambda us: datetime.datetime.fromtimestamp(us / 1e6, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
req = {"stream": stream, "from": iso(d0), "to": iso(d1), "interval": "1h", "group_by": ["country"],
       "aggregates": ["count", "uniq(bytes)", "p95(duration_ms)"], "limit": 10}
a = post("/v1/query", dict(req, source="rollup"))
assert a["source"].startswith("rollup:"), a["source"]
b = post("/v1/query", dict(req, source="raw"))
assert a["totals"]["count"] == b["totals"]["count"], (a["totals"], b["totals"])
duck_q = f"""
WITH top AS (SELECT country FROM T WHERE ts >= make_timestamp({d0}) AND ts < make_timestamp({d1})
             GROUP BY country ORDER BY count(*) DESC LIMIT 10)
SELECT time_bucket(INTERVAL '1 hour', ts) AS h, country, count(*), approx_count_distinct(bytes),
       quantile_cont(duration_ms, 0.95)
FROM T WHERE ts >= make_timestamp({d0}) AND ts < make_timestamp({d1}) AND country IN (SELECT country FROM top)
GROUP BY ALL"""
t_roll = lat(lambda: post("/v1/query", dict(req, source="rollup")), 50)
t_raw = lat(lambda: post("/v1/query", dict(req, source="raw")), 5)
t_duck = lat(lambda: con.execute(duck_q).fetchall(), 5)
print(f"# {n:,} events; dashboard: 1 day ({iso(d0)}), hourly, top 10 countries, count + uniq + p95; result cache off")
print(f"tally from rollup     median {t_roll[0]:8.2f} ms  p99 {t_roll[1]:8.2f} ms")
print(f"tally from raw events median {t_raw[0]:8.2f} ms")
print(f"DuckDB from raw       median {t_duck[0]:8.2f} ms   (DuckDB/tally-rollup speed ratio {t_duck[0]/t_roll[0]:.1f})")
# Unaligned: now-style ends, partial hours from raw events.
req2 = dict(req, **{"from": iso(d0 + 1_234_000_000), "to": iso(d1 - 2_345_000_000)})
t_edge = lat(lambda: post("/v1/query", dict(req2, source="rollup")), 20)
print(f"tally from rollup, range not on whole hours (ends from raw events): median {t_edge[0]:.2f} ms, p99 {t_edge[1]:.2f} ms")

# Freshness: an event sent now is in the next rollup answer.
now_us = int(time.time() * 1e6)
h0 = now_us // 3_600_000_000 * 3_600_000_000
fresh = {"stream": stream, "from": iso(h0), "to": iso(h0 + 3_600_000_000), "source": "rollup",
         "filters": [{"field": "country", "op": "=", "value": "ZZ"}], "group_by": ["country"],
         "aggregates": ["count"]}
waits = []
for i in range(200):
    t = time.perf_counter()
    post(f"/v1/events/{stream}", {"country": "ZZ", "path": "/fresh", "duration_ms": 1, "bytes": 1,
                                  "browser": "x"})
    while True:
        v = post("/v1/query", fresh)
        if v["totals"]["count"] == i + 1:
            break
    waits.append((time.perf_counter() - t) * 1000)
waits.sort()
print(f"freshness (send an event, until a rollup answer counts it): median {statistics.median(waits):.2f} ms, "
      f"p99 {waits[int(len(waits)*0.99)-1]:.2f} ms, max {waits[-1]:.2f} ms (target p99 <= 1000 ms)")
