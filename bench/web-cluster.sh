#!/usr/bin/env bash
# Tracker ingest in cluster mode: POST /api/event (bench/web.lua's bodies,
# wrk, one client thread, C keep-alive connections, DURATION each) to
#  1. a node alone (no cluster), as bench/web.sh does;
#  2. the cluster node that writes the visits (the maintenance lease's
#     holder): its events go to its own visit writer through NATS;
#  3. the other node: its events go to the holder's writer through NATS,
#     and it answers once it has applied the records too; then the same
#     bodies to its POST /v1/events (raw, no visits): the cluster's own
#     cost per event, without the visit writer.
# The cluster: one nats-server (JetStream, sync_interval: always, an R1
# stream) and two tally nodes, all on this machine's cores with wrk.
#
#   TALLY_BIN=target/release/tally bench/web-cluster.sh   (DURATION=10s CONNECTIONS=64)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
scripts/install-nats.sh
BIN=${TALLY_BIN:-target/release/tally}
[ -x "$BIN" ] || cargo build --release --quiet
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$DIR"' EXIT

warm() { # port: the first event waits for the user-agent rules to compile
  until curl -sf -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$1/api/event" \
    -H 'user-agent: Mozilla/5.0 Firefox/121.0' \
    -d '{"n":"pageview","u":"https://example.com/","d":"example.com"}' | grep -q 202; do
    sleep 0.2
  done
}

run() { # label port [path]
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/web.lua "http://127.0.0.1:$2${3:-/api/event}" >"$DIR/wrk.txt"
  local rps p50 p99 errs
  rps=$(awk '/^Requests\/sec/ {print $2}' "$DIR/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$DIR/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$DIR/wrk.txt")
  errs=$(awk '/Non-2xx/ {print $5}' "$DIR/wrk.txt")
  printf "%-44s %12s %10s %10s %s\n" "$1" "$rps" "$p50" "$p99" "${errs:+non-2xx: $errs}"
}

printf "%-44s %12s %10s %10s\n" "POST /api/event, $CONNECTIONS connections" "events/s" "p50" "p99"
"$BIN" serve --data-dir "$DIR/alone" --listen 127.0.0.1:28490 --web-site example.com >"$DIR/alone.out" 2>"$DIR/alone.err" &
ALONE=$!
until curl -sf http://127.0.0.1:28490/readyz >/dev/null; do sleep 0.1; done
warm 28490
run "a node alone" 28490
kill "$ALONE"; wait "$ALONE" 2>/dev/null || true

cat >"$DIR/nats.conf" <<CONF
server_name: w1
listen: 127.0.0.1:24291
http: 127.0.0.1:28291
max_payload: 8MB
jetstream { store_dir: "$DIR/js", sync_interval: always }
CONF
nats-server -c "$DIR/nats.conf" 2>"$DIR/nats.log" &
until curl -sf "http://127.0.0.1:28291/healthz?js-enabled-only=true" >/dev/null; do sleep 0.1; done
for n in 1 2; do
  "$BIN" serve --cluster nats://127.0.0.1:24291 --cluster-replicas 1 --node-id "w$n" \
    --archive "$DIR/archive" --data-dir "$DIR/w$n" --listen "127.0.0.1:2849$n" \
    --web-site example.com >"$DIR/w$n.out" 2>"$DIR/w$n.err" &
  until curl -sf "http://127.0.0.1:2849$n/readyz" >/dev/null; do sleep 0.1; done
done
# Wait for the visit writer (the lease's holder, after the publish timeout).
holder=""
until [ -n "$holder" ]; do
  for n in 1 2; do
    curl -sf "http://127.0.0.1:2849$n/metrics" | grep -q '^tally_web_visit_writer 1$' && holder=$n
  done
  sleep 0.2
done
other=$((3 - holder))
warm "2849$holder"
warm "2849$other"
run "cluster: the node writing the visits" "2849$holder"
run "cluster: the other node" "2849$other"
# The cluster's own cost, without visits: the same bodies as raw events.
run "cluster: the other node, POST /v1/events raw" "2849$other" /v1/events/plain
for n in 1 2; do
  curl -sf "http://127.0.0.1:2849$n/v1/sql" -H 'content-type: application/json' \
    -d '{"sql":"SELECT count(*) AS events, count(DISTINCT visitor) AS visitors FROM web_events"}' \
    | sed "s/^/node w$n: /"
  echo
done
