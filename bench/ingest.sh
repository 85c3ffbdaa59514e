#!/usr/bin/env bash
# Ingest benchmark: tally vs InfluxDB 1.6 on the same machine, same run.
#
# Both servers get the same synthetic page-view events over HTTP with durable
# acknowledgements (tally: fsync before ack, the default; InfluxDB: WAL fsync
# on every write, its default), from the same load generator (`tally bench`),
# which runs on the same 2 cores as the server it measures.
#
# Scenarios:
#   batch   - 2,000-event bodies (NDJSON / line protocol), 8 connections
#   single  - one event per POST, 32 connections, closed loop
#   half    - one event per POST, open loop at half the single-event rate
#             measured above, for latency at moderate load
#   single_wrk - one event per POST from wrk (a lighter client), 64 connections
#   overload- 5,000-event bodies from 512 connections, far past capacity:
#             peak RSS of tally and the share of 503 answers
#   lineproto - the same line protocol bodies to tally's /write and to
#             InfluxDB's: 5,000 points per request (InfluxDB's advice) from
#             8 connections, then one point per request from 32
#
# Usage: bench/ingest.sh [seconds per scenario, default 15]
#   SCENARIOS="lineproto" bench/ingest.sh 15   runs only those (default all)
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
SCENARIOS=${SCENARIOS:-batch single single_wrk overload lineproto}
run() { [[ " $SCENARIOS " == *" $1 "* ]]; }

command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v influxd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null; }
# TALLY_BIN=path measures that build (e.g. an earlier commit's) instead.
if [ -z "${TALLY_BIN:-}" ]; then cargo build --release -q; fi
TALLY=${TALLY_BIN:-target/release/tally}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.jsonl"

start_tally() {
  rm -rf "$WORK/tally"
  TALLY_LOG=warn $TALLY serve --data-dir "$WORK/tally" --listen 127.0.0.1:18181 >"$WORK/tally.out" 2>"$WORK/tally.err" &
  TALLY_PID=$!; SERVER_PID=$TALLY_PID; SERVER=tally
  until curl -sf http://127.0.0.1:18181/readyz >/dev/null; do sleep 0.05; done
}
stop_tally() { kill -TERM "$TALLY_PID"; wait "$TALLY_PID" || true; }

start_influx() {
  rm -rf "$WORK/influx"; mkdir -p "$WORK/influx"
  cat >"$WORK/influx.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:18088"
[meta]
  dir = "$WORK/influx/meta"
[data]
  dir = "$WORK/influx/data"
  wal-dir = "$WORK/influx/wal"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  trace-logging-enabled = false
[http]
  bind-address = "127.0.0.1:18086"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
CONF
  influxd -config "$WORK/influx.conf" >"$WORK/influx.log" 2>&1 &
  INFLUX_PID=$!; SERVER_PID=$INFLUX_PID; SERVER=influx
  until curl -sf http://127.0.0.1:18086/ping >/dev/null; do sleep 0.05; done
  curl -sf -XPOST http://127.0.0.1:18086/query --data-urlencode 'q=CREATE DATABASE bench' >/dev/null
}
stop_influx() { kill -TERM "$INFLUX_PID"; wait "$INFLUX_PID" || true; }

# CPU seconds (user + system) the server process has used so far.
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$1/stat"; }
# Runs the load generator and records the server's CPU time during the run,
# so results can be read per server CPU-second as well as per wall second.
bench() {
  local pid=$SERVER_PID before after
  before=$(cpu "$pid")
  $TALLY bench --duration "$SECS" "$@" >"$WORK/last.json"
  after=$(cpu "$pid")
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); r["server_cpu_seconds"]=float(sys.argv[3])-float(sys.argv[2]); r["server"]=sys.argv[4]; print(json.dumps(r))' \
    "$WORK/last.json" "$before" "$after" "$SERVER" | tee -a "$RESULTS"
}

if run batch; then
echo "== batch ingest (2,000 events/request, 8 connections, ${SECS}s)"
start_tally;  bench --url http://127.0.0.1:18181 --target tally  --batch 2000 --connections 8 --label batch; stop_tally
start_influx; bench --url http://127.0.0.1:18086 --target influx --batch 2000 --connections 8 --label batch; stop_influx
fi

if run single; then
echo "== single-event POSTs (32 connections, closed loop)"
start_tally;  bench --url http://127.0.0.1:18181 --target tally  --batch 1 --connections 32 --label single
RATE=$(tail -1 "$RESULTS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_per_sec"]/2)')
echo "== single-event POSTs at half that rate ($RATE req/s, open loop)"
bench --url http://127.0.0.1:18181 --target tally --batch 1 --connections 32 --rate "$RATE" --label half; stop_tally
start_influx; bench --url http://127.0.0.1:18086 --target influx --batch 1 --connections 32 --label single
IRATE=$(tail -1 "$RESULTS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["requests_per_sec"]/2)')
bench --url http://127.0.0.1:18086 --target influx --batch 1 --connections 32 --rate "$IRATE" --label half; stop_influx
fi

# The same single-event load from wrk, a much lighter client than the
# Rust generator, so more of the two cores go to the server under test.
wrk_single() { # URL CONTENT_TYPE BODY TARGET
  cat >"$WORK/post.lua" <<LUA
wrk.method = "POST"
wrk.body = [[$3]]
wrk.headers["Content-Type"] = "$2"
LUA
  local before after
  before=$(cpu "$SERVER_PID")
  wrk -t1 -c64 -d"${SECS}s" --latency -s "$WORK/post.lua" "$1" >"$WORK/wrk.txt"
  after=$(cpu "$SERVER_PID")
  python3 - "$WORK/wrk.txt" "$4" "$before" "$after" "$SECS" <<'PY' | tee -a "$RESULTS"
import json, re, sys
text, target, before, after, secs = open(sys.argv[1]).read(), sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
def ms(label):
    m = re.search(rf"^\s*{label}\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
print(json.dumps({"label": "single_wrk", "target": target, "requests_per_sec": rps, "seconds": secs,
                  "non_2xx": int(non2xx.group(1)) if non2xx else 0, "server_cpu_seconds": after - before,
                  "latency_ms": {"p50": ms("50%"), "p99": ms("99%")}}))
PY
}
if run single_wrk; then
echo "== single-event POSTs from wrk (64 connections, closed loop)"
start_tally
wrk_single http://127.0.0.1:18181/v1/events/bench application/json '{"path":"/pricing","country":"NO","browser":"Firefox","duration_ms":412,"bytes":5120}' tally
stop_tally
start_influx
wrk_single "http://127.0.0.1:18086/write?db=bench" text/plain 'bench,path=/pricing,country=NO,browser=Firefox duration_ms=412,bytes=5120' influx
stop_influx
fi

if run overload; then
echo "== overload (5,000 events/request, 512 connections): peak RSS and refusals"
start_tally
( peak=0; while kill -0 "$TALLY_PID" 2>/dev/null; do
    rss=$(awk '/VmRSS/{print $2}' /proc/$TALLY_PID/status 2>/dev/null || echo 0)
    [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$WORK/peak_rss_kb"
    sleep 0.1; done ) &
bench --url http://127.0.0.1:18181 --target tally --batch 5000 --connections 512 --label overload
stop_tally
echo "{\"label\":\"overload_peak_rss_mib\",\"value\":$(( $(cat "$WORK/peak_rss_kb") / 1024 ))}" | tee -a "$RESULTS"
fi

if run lineproto; then
# `--target influx` builds line protocol bodies and POSTs them to
# /write?db=bench&precision=ms: tally answers that path as InfluxDB does.
echo "== line protocol (5,000 points/request, 8 connections; then 1 point/request, 32 connections)"
start_tally
bench --url http://127.0.0.1:18181 --target influx --batch 5000 --connections 8 --label lp_batch
bench --url http://127.0.0.1:18181 --target influx --batch 1 --connections 32 --label lp_single
points=$(curl -sf http://127.0.0.1:18181/v1/sql -H 'content-type: application/json' -d '{"sql":"SELECT count(*) AS n FROM bench"}')
echo "tally stored: $points"
stop_tally
start_influx
bench --url http://127.0.0.1:18086 --target influx --batch 5000 --connections 8 --label lp_batch
bench --url http://127.0.0.1:18086 --target influx --batch 1 --connections 32 --label lp_single
stop_influx
fi

python3 - "$RESULTS" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def get(label, server):
    return next((r for r in rows if r.get("label") == label and r.get("server", r.get("target")) == server), None)
print()
print(f"{'scenario':<10} {'tally':>16} {'influxdb 1.6':>16} {'ratio':>8}   tally p50/p99 ms   influx p50/p99 ms   per server CPU-second: tally / influx")
for label, key, unit in [("batch", "events_per_sec", "ev/s"), ("single", "requests_per_sec", "req/s"), ("half", "requests_per_sec", "req/s"), ("single_wrk", "requests_per_sec", "req/s"),
                         ("lp_batch", "events_per_sec", "pt/s"), ("lp_single", "requests_per_sec", "req/s")]:
    t, i = get(label, "tally"), get(label, "influx")
    if not t or not i: continue
    ratio = t[key] / i[key] if i[key] else float("inf")
    print(f"{label:<10} {t[key]:>12,.0f} {unit:<4}{i[key]:>12,.0f} {unit:<4}{ratio:>7.2f}x   "
          f"{t['latency_ms']['p50']:.2f}/{t['latency_ms']['p99']:.2f}          {i['latency_ms']['p50']:.2f}/{i['latency_ms']['p99']:.2f}"
          f"          {t[key]*t['seconds']/max(t['server_cpu_seconds'],1e-9):,.0f} / {i[key]*i['seconds']/max(i['server_cpu_seconds'],1e-9):,.0f}")
o = get("overload", "tally")
peak = next((r["value"] for r in rows if r.get("label") == "overload_peak_rss_mib"), None)
if o:
    print(f"overload: {o['requests']} requests, statuses {o['statuses']}, peak RSS {peak} MiB, "
          f"accepted {o['events_per_sec']:,.0f} ev/s")
PY
