"""Times GET /rates cold and warm over keep-alive HTTP, and DuckDB on the
same questions (see bench/rates.sh)."""
import datetime
import http.client
import json
import os
import random
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../crates/tally/tests/it"))
import rates_reference  # noqa: E402

url, dump, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
db = rates_reference.load(dump)
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
duck = []
for q in questions:
    t = time.perf_counter()
    rates_reference.answer(db, q)
    duck.append(time.perf_counter() - t)
print(f"{'':34} {'p50 ms':>8} {'p99 ms':>8}")
for name, xs in [("tally /rates cold (HTTP, SQL)", cold), ("tally /rates warm (HTTP, cached)", warm), ("DuckDB in-process (no HTTP)", duck)]:
    print(f"{name:34} {pct(xs, 50):8.2f} {pct(xs, 99):8.2f}")
print(json.dumps({"questions": n, "cold_p50_ms": round(pct(cold, 50), 2), "cold_p99_ms": round(pct(cold, 99), 2),
                  "warm_p50_ms": round(pct(warm, 50), 2), "warm_p99_ms": round(pct(warm, 99), 2),
                  "duckdb_p50_ms": round(pct(duck, 50), 2), "duckdb_p99_ms": round(pct(duck, 99), 2)}))
