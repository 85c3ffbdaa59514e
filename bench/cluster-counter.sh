#!/usr/bin/env bash
# Cluster counter benchmark, in one run:
#  1. counter value reads (GET /getvalue, wrk, one client thread, C
#     keep-alive connections) through HAProxy (deploy/haproxy/haproxy.cfg)
#     in front of 1 tally node and then 3, against Redis GET
#     (redis-benchmark, the same connections) on the same machine;
#  2. replica staleness under write load: while `tally bench` writes
#     through node 1, nodes 2 and 3's `staleness_ms` (GET /v1/cluster,
#     sampled every 100 ms): how old their answers may be; and node 4's,
#     in a replica region: a fourth NATS server with its own JetStream
#     domain, a leaf node of the home cluster, holding a mirror of the
#     stream (--cluster-home-domain).
# Three NATS servers (R3, sync_interval: always) on this machine too.
#
#   TALLY_BIN=target/release/tally bench/cluster-counter.sh
#   (DURATION=10s CONNECTIONS=64 LOAD_SECONDS=20)
# Needs wrk, redis-server/redis-benchmark and haproxy (Debian), nats-server
# (scripts/install-nats.sh); installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin"
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
LOAD_SECONDS=${LOAD_SECONDS:-20}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
command -v haproxy >/dev/null || need+=(haproxy)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
scripts/install-nats.sh
BIN=${TALLY_BIN:-target/release/tally}
[ -x "$BIN" ] || cargo build --release --quiet
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null; rm -rf "$DIR"' EXIT

# --- NATS ---------------------------------------------------------------
for i in 1 2 3; do
  routes=""
  for j in 1 2 3; do [ "$j" != "$i" ] && routes="$routes${routes:+, }nats-route://127.0.0.1:2622$j"; done
  cat >"$DIR/nats-$i.conf" <<EOF
server_name: b$i
listen: 127.0.0.1:2422$i
http: 127.0.0.1:2822$i
max_payload: 8MB
jetstream { store_dir: "$DIR/js$i", sync_interval: always, domain: home }
cluster { name: bench, listen: 127.0.0.1:2622$i, routes: [$routes] }
leafnodes { listen: 127.0.0.1:2722$i }
EOF
  nats-server -c "$DIR/nats-$i.conf" 2>"$DIR/nats-$i.log" &
done
# The replica region's server: its own domain, a leaf node of the home's.
cat >"$DIR/nats-4.conf" <<EOF
server_name: eu1
listen: 127.0.0.1:24224
http: 127.0.0.1:28224
max_payload: 8MB
jetstream { store_dir: "$DIR/js4", sync_interval: always, domain: eu }
leafnodes { remotes: [ { urls: [nats-leaf://127.0.0.1:27221, nats-leaf://127.0.0.1:27222, nats-leaf://127.0.0.1:27223] } ] }
EOF
nats-server -c "$DIR/nats-4.conf" 2>"$DIR/nats-4.log" &
for i in 1 2 3 4; do
  until curl -sf "http://127.0.0.1:2822$i/healthz?js-enabled-only=true" >/dev/null; do sleep 0.1; done
done
NATS=nats://127.0.0.1:24221,nats://127.0.0.1:24222,nats://127.0.0.1:24223

node() { # n [more flags]
  local n=$1
  shift
  "$BIN" serve --cluster "${NODE_NATS:-$NATS}" --node-id "n$n" --archive "$DIR/archive" \
    --data-dir "$DIR/n$n" --listen "127.0.0.1:2808$n" "$@" >"$DIR/n$n.out" 2>"$DIR/n$n.err" &
  local pid=$!
  until curl -sf "http://127.0.0.1:2808$n/readyz" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { echo "node $n exited:" >&2; tail -5 "$DIR/n$n.err" >&2; exit 1; }
    sleep 0.1
  done
}

haproxy_for() { # number of nodes
  sed -e 's/^    bind :8080$/    bind 127.0.0.1:28080/' -e '/^    server tally-/d' \
    -e 's/^    maxconn 20000$/    maxconn 2000/' -e '/^    log /d' \
    deploy/haproxy/haproxy.cfg >"$DIR/haproxy.cfg"
  for n in $(seq 1 "$1"); do echo "    server tally-$n 127.0.0.1:2808$n" >>"$DIR/haproxy.cfg"; done
  haproxy -db -f "$DIR/haproxy.cfg" >"$DIR/haproxy.log" 2>&1 &
  HAPROXY=$!
  until curl -sf http://127.0.0.1:28080/readyz >/dev/null; do sleep 0.1; done
}

reads() { # label url
  wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$2" >"$DIR/wrk.txt"
  local rps p50 p99 err
  rps=$(awk '/^Requests\/sec/ {print $2}' "$DIR/wrk.txt")
  p50=$(awk '$1=="50%" {print $2}' "$DIR/wrk.txt")
  p99=$(awk '$1=="99%" {print $2}' "$DIR/wrk.txt")
  err=$(awk '/Non-2xx/ {print $5}' "$DIR/wrk.txt")
  printf "%-34s %12s %10s %10s %s\n" "$1" "$rps" "$p50" "$p99" "${err:+non-2xx: $err}"
}

node 1
echo "== counter value reads, $CONNECTIONS keep-alive connections, $DURATION each"
printf "%-34s %12s %10s %10s\n" "" "requests/s" "p50" "p99"
reads "node 1 directly" http://127.0.0.1:28081/getvalue
haproxy_for 1
reads "HAProxy, 1 node" http://127.0.0.1:28080/getvalue
kill "$HAPROXY"; wait "$HAPROXY" 2>/dev/null || true
node 2
node 3
haproxy_for 3
reads "HAProxy, 3 nodes" http://127.0.0.1:28080/getvalue
redis-server --port 28471 --save "" --appendonly no >"$DIR/redis.log" 2>&1 &
until redis-cli -p 28471 ping >/dev/null 2>&1; do sleep 0.1; done
redis-cli -p 28471 set key:__rand_int__ 42 >/dev/null
n=$(awk '/requests in/ {print $1}' "$DIR/wrk.txt")
redis-benchmark -p 28471 -t get -c "$CONNECTIONS" -n "$n" --precision 3 >"$DIR/redis.txt" 2>&1
r_rps=$(grep -a "throughput summary:" "$DIR/redis.txt" | awk '{print $3}')
r_sum=$(grep -a -A4 "Summary:" "$DIR/redis.txt" | tail -1)
printf "%-34s %12s %9sms %9sms\n" "Redis GET (redis-benchmark)" "$r_rps" \
  "$(echo "$r_sum" | awk '{print $3}')" "$(echo "$r_sum" | awk '{print $5}')"

NODE_NATS=nats://127.0.0.1:24224 node 4 --cluster-replicas 1 --cluster-home-domain home

echo "== replica staleness while node 1 takes writes ($LOAD_SECONDS s)"
"$BIN" bench --url http://127.0.0.1:28081 --stream load --connections 4 --batch 500 \
  --duration "$LOAD_SECONDS" --label load >"$DIR/load.json" &
LOAD=$!
: >"$DIR/staleness.txt"
while kill -0 "$LOAD" 2>/dev/null; do
  for n in 2 3 4; do
    curl -sf "http://127.0.0.1:2808$n/v1/cluster" \
      | python3 -c 'import json,sys; print(sys.argv[1], json.load(sys.stdin)["staleness_ms"])' "$n" >>"$DIR/staleness.txt" || true
  done
  sleep 0.1
done
wait "$LOAD"
python3 - "$DIR/staleness.txt" "$DIR/load.json" <<'EOF'
import json, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
load = json.loads(open(sys.argv[2]).read().splitlines()[-1])
print(f"writes through node 1: {load['events_per_sec']:.0f} events/s ({load['ok_requests']} requests)")
for label, nodes in (("nodes 2 and 3 (home region)", {"2", "3"}), ("node 4 (replica region)", {"4"})):
    xs = sorted(int(v) for n, v in rows if n in nodes)
    pct = lambda p: xs[min(len(xs) - 1, int(len(xs) * p))]
    print(f"staleness of {label} over {len(xs)} samples: p50 {pct(0.5)} ms, p99 {pct(0.99)} ms, max {xs[-1]} ms")
EOF
