"""Times GET /rates cold and warm over keep-alive HTTP, and DuckDB on the
same questions (see bench/rates.sh)."""
import datetime
import http.client
import json
import random
import sys
import time
import urllib.parse

import duckdb

url, dump, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
tables, cur = {}, None
for line in open(dump, encoding="utf-8"):
    line = line.rstrip("\n")
    if cur is None:
        if line.startswith("COPY "):
            cur = line.split()[1]
            tables[cur] = []
    elif line == "\\.":
        cur = None
    else:
        tables[cur].append([None if v == "\\N" else v for v in line.split("\t")])
db = duckdb.connect()
db.execute("CREATE TABLE ports (code TEXT, name TEXT, parent_slug TEXT)")
db.execute("CREATE TABLE regions (slug TEXT, name TEXT, parent_slug TEXT)")
db.execute("CREATE TABLE prices (orig_code TEXT, dest_code TEXT, day DATE, price INTEGER)")
db.executemany("INSERT INTO ports VALUES (?, ?, ?)", tables["ports"])
db.executemany("INSERT INTO regions VALUES (?, ?, ?)", tables["regions"])
db.executemany("INSERT INTO prices VALUES (?, ?, ?, ?)", tables["prices"])
lo, hi = db.execute("SELECT min(day), max(day) FROM prices").fetchone()
regions = [r[0] for r in db.execute("SELECT slug FROM regions ORDER BY 1").fetchall()]
pairs = db.execute("SELECT DISTINCT orig_code, dest_code FROM prices ORDER BY 1, 2").fetchall()
rng = random.Random(1)
questions = []
for i in range(n):
    o, d = rng.choice(pairs) if i % 2 else (rng.choice(regions), rng.choice(regions))
    start = lo + datetime.timedelta(days=rng.randint(0, (hi - lo).days))
    end = min(hi, start + datetime.timedelta(days=rng.randint(0, 30)))
    questions.append({"date_from": str(start), "date_to": str(end), "origin": o, "destination": d})

host = urllib.parse.urlparse(url).netloc
conn = http.client.HTTPConnection(host)


def ask(q):
    t = time.perf_counter()
    conn.request("GET", "/rates?" + urllib.parse.urlencode(q))
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, body
    return time.perf_counter() - t


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] * 1000


cold = [ask(q) for q in questions]
warm = [ask(q) for _ in range(5) for q in questions]
SQL = """
WITH RECURSIVE ro(slug) AS (SELECT slug FROM regions WHERE slug = $o
                            UNION SELECT r.slug FROM regions r JOIN ro ON r.parent_slug = ro.slug),
     rd(slug) AS (SELECT slug FROM regions WHERE slug = $d
                  UNION SELECT r.slug FROM regions r JOIN rd ON r.parent_slug = rd.slug),
     o AS (SELECT code FROM ports WHERE code = $o OR parent_slug IN (SELECT slug FROM ro)),
     de AS (SELECT code FROM ports WHERE code = $d OR parent_slug IN (SELECT slug FROM rd)),
     days AS (SELECT CAST(unnest(generate_series(CAST($f AS DATE), CAST($t AS DATE), INTERVAL 1 DAY)) AS DATE) AS day)
SELECT days.day, CASE WHEN count(p.price) >= 3 THEN CAST(round(avg(p.price)) AS BIGINT) END
FROM days LEFT JOIN prices p ON p.day = days.day
     AND p.orig_code IN (SELECT code FROM o) AND p.dest_code IN (SELECT code FROM de)
GROUP BY days.day ORDER BY days.day
"""
duck = []
for q in questions:
    t = time.perf_counter()
    db.execute(SQL, {"o": q["origin"], "d": q["destination"], "f": q["date_from"], "t": q["date_to"]}).fetchall()
    duck.append(time.perf_counter() - t)
print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8}")
for name, xs in [("tally /rates cold (HTTP, SQL)", cold), ("tally /rates warm (HTTP, cached)", warm), ("DuckDB in-process (no HTTP)", duck)]:
    print(f"{name:34} {pct(xs, 50):8.2f} {pct(xs, 99):8.2f}")
print(json.dumps({"questions": n, "cold_p50_ms": round(pct(cold, 50), 2), "cold_p99_ms": round(pct(cold, 99), 2),
                  "warm_p50_ms": round(pct(warm, 50), 2), "warm_p99_ms": round(pct(warm, 99), 2),
                  "duckdb_p50_ms": round(pct(duck, 50), 2), "duckdb_p99_ms": round(pct(duck, 99), 2)}))
