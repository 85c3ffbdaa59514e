#!/usr/bin/env python3
"""Ships generated access logs to tally the way Fluent Bit's `http` output
does, then asks tally for the average RTT per service per hour, from the
rollup (streaming) and from the hourly job (batch, run here over the
complete hours shipped), and checks both against the same average computed
here from the lines sent.

    tally serve --config examples/logs/tally.toml
    python3 examples/logs/ship.py http://127.0.0.1:8080 [--lines 100000] [--hours 3]

Fluent Bit's equivalent output section:

    [OUTPUT]
        Name             http
        Match            *
        Host             127.0.0.1
        Port             8080
        URI              /v1/events/access_logs
        Format           json_lines
        Json_date_key    date
        Json_date_format double
        Compress         gzip

Each log line: service, path, status (text: a dimension to group by),
rtt_ms; the time in `date` (epoch seconds with microseconds). Bodies of
5,000 lines, gzip-compressed. Prints one JSON summary line; exits 1 if an
answer differs from the local computation.
"""

import argparse
import gzip
import json
import random
import sys
import time
import urllib.request
from collections import defaultdict

SERVICES = {"api": 40.0, "auth": 12.0, "search": 120.0, "static": 3.0}
PATHS = ["/", "/login", "/search", "/items/1", "/items/2", "/cart"]


def post(url, body, headers):
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(req) as r:
        return r.status, r.read()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--hours", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    base = args.url.rstrip("/")

    # Whole hours ending at the current one, so every line is recent.
    end = (int(time.time()) // 3600 + 1) * 3600
    start = end - args.hours * 3600
    sums = defaultdict(lambda: [0, 0.0])  # (hour, service) -> [count, sum rtt]
    lines = []
    for _ in range(args.lines):
        t = rng.uniform(start, min(end, time.time()) - 1)
        t = round(t, 6)
        service = rng.choice(list(SERVICES))
        rtt = round(rng.expovariate(1.0 / SERVICES[service]), 3)
        status = rng.choices(["200", "404", "500"], weights=[95, 4, 1])[0]
        lines.append(json.dumps({"date": t, "service": service, "path": rng.choice(PATHS),
                                 "status": status, "rtt_ms": rtt}))
        # tally keeps the time to the microsecond: bucket on that.
        hour = int(round(t * 1e6)) // 3_600_000_000 * 3600
        s = sums[(hour, service)]
        s[0] += 1
        s[1] += rtt

    t0 = time.time()
    for i in range(0, len(lines), 5000):
        body = gzip.compress(("\n".join(lines[i:i + 5000]) + "\n").encode())
        status, _ = post(f"{base}/v1/events/access_logs", body,
                         {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip"})
        assert status == 200, status
    ship_s = time.time() - t0

    # Average RTT per service per hour, from the rollup's hourly buckets.
    sql = ('SELECT CAST(to_unixtime(bucket) AS BIGINT) AS hour, service, "count", "avg(rtt_ms)" AS avg '
           "FROM rollups.rtt_by_service WHERE grain = 'hour' ORDER BY hour, service")
    _, out = post(f"{base}/v1/sql", json.dumps({"sql": sql}).encode(),
                  {"Content-Type": "application/json"})
    rows = json.loads(out)["rows"]
    got = {(r["hour"], r["service"]): (r["count"], r["avg"]) for r in rows}
    want = {k: (c, s / c) for k, (c, s) in sums.items()}
    bad = []
    for k in sorted(set(got) | set(want)):
        g, w = got.get(k), want.get(k)
        if g is None or w is None or g[0] != w[0] or abs(g[1] - w[1]) > 1e-9 * max(1.0, abs(w[1])):
            bad.append({"hour": k[0], "service": k[1], "tally": g, "expected": w})

    # The batch mode: run the job over the complete hours shipped (each
    # run replaces that hour's rows), then read its table.
    current = int(time.time()) // 3600 * 3600
    job_rows = 0
    if current > start:
        frm = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start))
        to = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(current))
        status, _ = post(f"{base}/v1/jobs/rtt_hourly/run?from={frm}&to={to}", b"", {})
        assert status == 200, status
        sql = ("SELECT CAST(to_unixtime(window_start) AS BIGINT) AS hour, service, requests, "
               "avg_rtt_ms AS avg FROM jobs.rtt_hourly ORDER BY hour, service")
        _, out = post(f"{base}/v1/sql", json.dumps({"sql": sql}).encode(),
                      {"Content-Type": "application/json"})
        job = {(r["hour"], r["service"]): (r["requests"], r["avg"])
               for r in json.loads(out)["rows"] if start <= r["hour"] < current}
        job_rows = len(job)
        for k in sorted(set(job) | {k for k in want if k[0] < current}):
            g, w = job.get(k), want.get(k)
            if g is None or w is None or g[0] != w[0] or abs(g[1] - w[1]) > 1e-9 * max(1.0, abs(w[1])):
                bad.append({"job hour": k[0], "service": k[1], "tally": g, "expected": w})
    print(json.dumps({"lines": len(lines), "ship_seconds": round(ship_s, 3),
                      "hour_service_rows": len(got), "job_rows": job_rows,
                      "mismatches": bad[:5]}))
    for (hour, service), (count, avg) in sorted(got.items()):
        print(f"{time.strftime('%Y-%m-%d %H:00', time.gmtime(hour))}  {service:<8} "
              f"{count:>7} requests  avg RTT {avg:8.2f} ms", file=sys.stderr)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
