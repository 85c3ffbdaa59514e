#!/usr/bin/env bash
# Tracker ingest: POST /api/event with enrichment (user agent rules, source,
# UTM, visitor id, site check), each event durable before its 202, from C
# keep-alive connections for DURATION (wrk, one client thread, on the same
# 2 cores as the server). In the same run, the same bodies to plain
# POST /v1/events (one event per request, no enrichment) as tally's own
# baseline; the difference is the cost of enrichment. Then GET /healthz,
# which does nothing: the most requests/s HTTP itself allows here.
#
#   bench/web.sh                 (DURATION=10s CONNECTIONS=64 BIN=target/release/tally)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
# BIN=path runs another build of tally (a before/after comparison).
if [ -z "${BIN:-}" ]; then
  cargo build --release --quiet
  BIN=target/release/tally
fi
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$DIR"' EXIT
PORT=18482
"$BIN" serve --data-dir "$DIR/data" --listen 127.0.0.1:$PORT --web-site example.com >"$DIR/out" 2>"$DIR/err" &
SERVER=$!
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.1; done
# The first event waits for the user-agent rules to compile.
curl -sf -X POST http://127.0.0.1:$PORT/api/event -H 'user-agent: Mozilla/5.0 Firefox/121.0' \
  -d '{"n":"pageview","u":"https://example.com/","d":"example.com"}' >/dev/null

# The server's CPU time so far (user + system, clock ticks).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SERVER/stat"; }
TICK=$(getconf CLK_TCK)

run() {
  local script=(-s bench/web.lua)
  [ "${3:-}" = plain ] && script=()
  local before after
  before=$(cpu_ticks)
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "${script[@]}" "http://127.0.0.1:$PORT$1" >"$DIR/wrk.txt"
  after=$(cpu_ticks)
  rps=$(awk '/^Requests\/sec/ {print $2}' "$DIR/wrk.txt")
  reqs=$(awk '/requests in/ {print $1}' "$DIR/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$DIR/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$DIR/wrk.txt")
  errs=$(awk '/Non-2xx/ {print $5}' "$DIR/wrk.txt")
  # Server CPU per request: what the server itself spends, whatever the
  # load generator beside it takes.
  cpu=$(awk -v t=$((after - before)) -v r="$reqs" -v hz="$TICK" 'BEGIN {printf "%.1f", t / hz * 1e6 / r}')
  printf "%-34s %12s %10s %10s %14s %s\n" "$2" "$rps" "$p50" "$p99" "$cpu" "${errs:+non-2xx: $errs}"
}
printf "%-34s %12s %10s %10s %14s\n" "" "events/s" "p50" "p99" "server CPU µs"
run /api/event "POST /api/event (enriched)"
run /v1/events/plain "POST /v1/events (1 event, raw)"
# What HTTP alone costs here: a request that does no work.
run /healthz "GET /healthz (no work)" plain
stored=$(curl -sf http://127.0.0.1:$PORT/v1/sql -H 'content-type: application/json' \
  -d '{"sql":"SELECT count(*) AS n, count(DISTINCT visitor) AS v FROM web_events"}')
echo "stored in web_events: $stored"
curl -sf http://127.0.0.1:$PORT/metrics | grep -E '^tally_web_events_(stored|dropped)' || true
