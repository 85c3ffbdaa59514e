"""Query benchmark: the same SQL on the same Parquet through tally, DuckDB and
chDB (ClickHouse), in one run. Prints a table of median latencies and the
ratio tally/DuckDB, then the latency of answers served by tally's cache.

usage: query.py TALLY_URL DATA_DIR STREAM [REPEATS]
The server must already hold the data (bench/query.sh loads it) and run with
the result cache off for the raw-scan rows (--query-cache-bytes 0);
the cache rows use a second server URL in TALLY_CACHED_URL when set.
"""
import json, os, re, statistics, sys, time, urllib.request

url, data_dir, stream = sys.argv[1], sys.argv[2], sys.argv[3]
repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 5
glob = f"{data_dir}/segments/{stream}/**/*.parquet"

QUERIES = [
    ("count", "SELECT count(*) FROM T"),
    ("group by country", "SELECT country, count(*) AS n FROM T GROUP BY country ORDER BY n DESC LIMIT 10"),
    ("hourly avg", "SELECT date_trunc('hour', ts) AS h, count(*) AS n, avg(duration_ms) AS d FROM T GROUP BY h ORDER BY h"),
    ("filter + top paths", "SELECT path, sum(bytes) AS b FROM T WHERE country = 'NO' AND browser = 'Firefox' GROUP BY path ORDER BY b DESC LIMIT 10"),
    ("distinct", "SELECT count(DISTINCT bytes) FROM T WHERE duration_ms > 2500"),
    ("one hour", "SELECT count(*), max(duration_ms) FROM T WHERE ts >= TIMESTAMP '{h0}' AND ts < TIMESTAMP '{h1}'"),
]


def post_sql(base, sql):
    req = urllib.request.Request(base + "/v1/sql", data=json.dumps({"sql": sql}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read())


def timed(f, n):
    f()  # warm: metadata caches, page cache
    out = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        out.append(time.perf_counter() - t)
    return statistics.median(out)


import duckdb
con = duckdb.connect()
con.execute(f"CREATE VIEW T AS SELECT * FROM read_parquet('{glob}')")
rows = con.execute("SELECT count(*), epoch_us(min(ts)), epoch_us(max(ts)) FROM T").fetchone()
import datetime
mid_us = (rows[1] + rows[2]) // 2
h0 = datetime.datetime.fromtimestamp(mid_us // 3_600_000_000 * 3600, datetime.timezone.utc).replace(tzinfo=None)
h1 = h0 + datetime.timedelta(hours=1)
try:
    import chdb
except ImportError:
    chdb = None
cache_only = bool(os.environ.get("TALLY_CACHE_ONLY"))
if not cache_only:
  print(f"# {rows[0]:,} events of '{stream}', {len(QUERIES)} queries, median of {repeats}; threads: all cores for every engine")
  print(f"{'query':22} {'tally ms':>9} {'duckdb ms':>10} {'chdb ms':>9} {'duckdb/tally':>13}")
ratios = []
for name, q in ([] if cache_only else QUERIES):
    q = q.format(h0=h0.strftime("%Y-%m-%d %H:%M:%S"), h1=h1.strftime("%Y-%m-%d %H:%M:%S"))
    tq = re.sub(r"\bT\b", stream, q)
    t_tally = timed(lambda: post_sql(url, tq), repeats)
    t_duck = timed(lambda: con.execute(q).fetchall(), repeats)
    t_ch = None
    if chdb is not None:
        cq = re.sub(r"\bT\b", f"file('{glob}', Parquet)", q)
        t_ch = timed(lambda: chdb.query(cq, "CSV"), repeats)
    ratios.append(t_duck / t_tally)
    ch = f"{t_ch*1000:9.1f}" if t_ch is not None else f"{'n/a':>9}"
    print(f"{name:22} {t_tally*1000:9.1f} {t_duck*1000:10.1f} {ch} {t_duck/t_tally:13.2f}")
# The time-series API against the same work in SQL: the top 5 countries,
# their hourly series plus "other", totals per group and overall.
day_us = 86_400_000_000
ts_from = rows[1] // day_us * day_us
ts_to = (rows[2] // day_us + 1) * day_us
iso = lambda us: datetime.datetime.fromtimestamp(us / 1e6, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
ts_body = json.dumps({"stream": stream, "from": iso(ts_from), "to": iso(ts_to), "interval": "1h",
                      "aggregates": ["count", "avg(duration_ms)"], "group_by": ["country"], "limit": 5}).encode()


def post_ts(base, parse=True):
    req = urllib.request.Request(base + "/v1/query", data=ts_body, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req) as r:
        body = r.read()
    # Cached rows time the server, not this client's JSON parser (about
    # 1 ms for the 90 KB answer).
    return json.loads(body) if parse else body


def ts_sql(table, bucket, top_in):
    rng = f"ts >= {ts_from} AND ts < {ts_to}"
    return (f"SELECT {bucket} AS b, CASE WHEN {top_in} THEN country END AS g, count(*), avg(duration_ms) "
            f"FROM {table} WHERE {rng} GROUP BY GROUPING SETS ((b, g), (g), ())")


if not cache_only:
    top = "(SELECT country FROM {t} WHERE {r} GROUP BY country ORDER BY count(*) DESC LIMIT 5)"
    d_rng = f"ts >= make_timestamp({ts_from}) AND ts < make_timestamp({ts_to})"
    duck_q = ts_sql("T", "time_bucket(INTERVAL '1 hour', ts)",
                    "country IN " + top.format(t="T", r=d_rng)).replace(f"ts >= {ts_from} AND ts < {ts_to}", d_rng)
    t_tally = timed(lambda: post_ts(url), repeats)
    t_duck = timed(lambda: con.execute(duck_q).fetchall(), repeats)
    t_ch = None
    if chdb is not None:
        src = f"file('{glob}', Parquet)"
        c_rng = f"ts >= fromUnixTimestamp64Micro({ts_from}) AND ts < fromUnixTimestamp64Micro({ts_to})"
        ch_q = ts_sql(src, "toStartOfHour(ts)", "country IN " + top.format(t=src, r=c_rng)).replace(
            f"ts >= {ts_from} AND ts < {ts_to}", c_rng)
        try:
            t_ch = timed(lambda: chdb.query(ch_q, "CSV"), repeats)
        except Exception as e:  # noqa: BLE001 - a peer's failure is reported, not fatal
            print(f"# chdb time-series query failed: {e}")
    ratios.append(t_duck / t_tally)
    ch = f"{t_ch*1000:9.1f}" if t_ch is not None else f"{'n/a':>9}"
    print(f"{'time series (API)':22} {t_tally*1000:9.1f} {t_duck*1000:10.1f} {ch} {t_duck/t_tally:13.2f}")

if ratios:
  print(f"geometric mean duckdb/tally speed ratio: {statistics.geometric_mean(ratios):.2f} (>= 0.8 is the target)")

cached = os.environ.get("TALLY_CACHED_URL")
if cached:
    q = re.sub(r"\bT\b", stream, QUERIES[1][1])
    post_sql(cached, q)
    lat = []
    for _ in range(200):
        t = time.perf_counter()
        post_sql(cached, q)
        lat.append(time.perf_counter() - t)
    lat.sort()
    print(f"cached SQL answer over HTTP: median {statistics.median(lat)*1000:.3f} ms, p99 {lat[int(len(lat)*0.99)]*1000:.3f} ms")
    def ts():
        post_ts(cached, parse=False)
    t = time.perf_counter()
    assert post_ts(cached)["series"], "time-series answer without series"
    first = time.perf_counter() - t  # a miss: computed from the segments
    lat = []
    for _ in range(200):
        t = time.perf_counter(); ts(); lat.append(time.perf_counter() - t)
    lat.sort()
    print(f"time series (hourly series of the top-5 countries, all data): first {first*1000:.1f} ms, cached median {statistics.median(lat)*1000:.3f} ms, p99 {lat[int(len(lat)*0.99)]*1000:.3f} ms")
