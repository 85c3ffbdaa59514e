#!/usr/bin/env bash
# A tally cluster on one machine, with one command: three NATS servers
# (JetStream, one R3 stream), three tally nodes, and HAProxy in front of
# them checking /readyz. Under a steady write load through HAProxy it then
#   1. adds a fourth node (it bootstraps, and takes traffic once ready),
#   2. removes the first (SIGTERM: it drains, HAProxy takes it out),
#   3. upgrades the others one after another (a rolling restart),
# and prints what the load saw (every request's status) and checks that
# the cluster holds exactly the events it acknowledged.
#
#   examples/cluster/run.sh            # the whole tour, then stops everything
#   KEEP=1 examples/cluster/run.sh     # leaves the cluster running
#
# TALLY_BIN picks the binary (default: a release build, built if missing;
# set it to a newer build to make step 3 a real upgrade). Ports 14221-14223
# (NATS clients; 16221-16223 routes, 18222-18224 monitoring), 18081-18084
# (tally), 18080 (HAProxy) and 18090 (its stats page)
# on 127.0.0.1. WORK_DIR keeps the data (default: a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
export PATH="$PATH:/usr/sbin"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
scripts/install-nats.sh
if ! command -v haproxy >/dev/null; then
  echo "installing: haproxy (Debian)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends haproxy >/dev/null
fi
bin=${TALLY_BIN:-$root/target/release/tally}
if [ -z "${TALLY_BIN:-}" ] && [ ! -x "$bin" ]; then
  echo "building tally (release; this takes a while the first time)"
  cargo build --release --quiet
fi

work=${WORK_DIR:-$(mktemp -d)}
mkdir -p "$work"
echo "cluster files in $work"
declare -A pids
cleanup() {
  if [ -n "${KEEP:-}" ]; then
    echo "left running (KEEP=1); stop with: kill ${pids[*]}"
    return
  fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

wait_url() { # url seconds
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "$1 did not answer within $2 s" >&2
  return 1
}

# --- three NATS servers, clustered, JetStream synced on every write ---------
for i in 1 2 3; do
  routes=""
  for j in 1 2 3; do
    [ "$j" != "$i" ] && routes="$routes${routes:+, }nats-route://127.0.0.1:1622$j"
  done
  cat >"$work/nats-$i.conf" <<EOF
server_name: nats-$i
listen: 127.0.0.1:1422$i
http: 127.0.0.1:1822$((i + 1))
max_payload: 8MB
jetstream {
  store_dir: "$work/nats-$i"
  sync_interval: always
}
cluster {
  name: tally-example
  listen: 127.0.0.1:1622$i
  routes: [$routes]
}
EOF
  nats-server -c "$work/nats-$i.conf" 2>"$work/nats-$i.log" &
  pids[nats-$i]=$!
done
for i in 1 2 3; do wait_url "http://127.0.0.1:1822$((i + 1))/healthz?js-enabled-only=true" 30; done
echo "NATS: nats://127.0.0.1:14221,14222,14223"
nats=nats://127.0.0.1:14221,nats://127.0.0.1:14222,nats://127.0.0.1:14223

# --- tally nodes ------------------------------------------------------------
start_node() { # n
  local n=$1
  TALLY_LOG=info "$bin" serve --cluster "$nats" --node-id "node-$n" \
    --archive "$work/archive" --data-dir "$work/node-$n" \
    --listen "127.0.0.1:1808$n" --drain-delay 3s \
    >>"$work/node-$n.log" 2>&1 &
  pids[node-$n]=$!
}
stop_node() { # n: SIGTERM, then wait for the clean exit
  local n=$1 pid=${pids[node-$1]}
  kill -TERM "$pid"
  wait "$pid"
  unset "pids[node-$n]"
}
wait_ready() { wait_url "http://127.0.0.1:1808$1/readyz" 120; }

# HAProxy's view of its servers, from its stats page.
lb_state() { # server name
  curl -fsS "http://127.0.0.1:18090/stats;csv" 2>/dev/null | awk -F, -v s="$1" '$1 == "tally_nodes" && $2 == s { print $18 }'
}
wait_lb() { # server state
  local i
  for ((i = 0; i < 600; i++)); do
    [ "$(lb_state "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  echo "HAProxy never saw $1 $2" >&2
  return 1
}

for n in 1 2 3; do start_node "$n"; done
for n in 1 2 3; do wait_ready "$n"; done
echo "tally: http://127.0.0.1:18081 .. 18083"

# --- HAProxy: the shipped config with loopback addresses --------------------
sed -e 's/^    bind :8080$/    bind 127.0.0.1:18080/' \
    -e 's/^    maxconn 20000$/    maxconn 2000/' \
    -e '/^    server tally-/d' \
    "$root/deploy/haproxy/haproxy.cfg" >"$work/haproxy.cfg"
cat >>"$work/haproxy.cfg" <<EOF
    server tally-1 127.0.0.1:18081
    server tally-2 127.0.0.1:18082
    server tally-3 127.0.0.1:18083
    server tally-4 127.0.0.1:18084

listen stats
    bind 127.0.0.1:18090
    stats enable
    stats uri /stats
EOF
haproxy -c -q -f "$work/haproxy.cfg"
haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
pids[haproxy]=$!
for n in 1 2 3; do wait_lb "tally-$n" UP; done
echo "HAProxy: http://127.0.0.1:18080 (stats: http://127.0.0.1:18090/stats)"

# --- a steady load through HAProxy, in 5-second runs until told to stop -----
touch "$work/load.on"
(
  while [ -e "$work/load.on" ]; do
    "$bin" bench --url http://127.0.0.1:18080 --stream example --connections 4 \
      --batch 50 --rate 200 --duration 5 --idempotency-keys --label load
  done
) >"$work/load.jsonl" 2>"$work/load.err" &
pids[load]=$!
sleep 3

echo "1. adding node-4 (it bootstraps from the stream and the archive)"
start_node 4
wait_ready 4
wait_lb tally-4 UP
echo "   node-4 is ready and in rotation"

echo "2. removing node-1 (SIGTERM: /readyz 503, drain, exit)"
stop_node 1
wait_lb tally-1 DOWN
echo "   node-1 left cleanly"

echo "3. rolling upgrade of node-2, node-3, node-4"
for n in 2 3 4; do
  stop_node "$n"
  start_node "$n"
  wait_ready "$n"
  wait_lb "tally-$n" UP
  echo "   node-$n restarted and back in rotation"
done
sleep 2
rm -f "$work/load.on"
wait "${pids[load]}"
unset "pids[load]"

# --- what the load saw, and what the cluster holds --------------------------
python3 - "$work/load.jsonl" <<'EOF' >"$work/load.summary"
import json, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
statuses = {}
for r in runs:
    for k, v in r["statuses"].items():
        statuses[k] = statuses.get(k, 0) + v
ok = sum(r["ok_requests"] for r in runs)
print(ok * runs[0]["batch"], sum(statuses.values()), ok,
      " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())))
EOF
read -r acked requests ok statuses <"$work/load.summary"
echo "the load sent $requests requests: $statuses (status:count; 0 is a transport error)"
stored=0
for i in $(seq 1 50); do
  stored=$(curl -fsS -X POST http://127.0.0.1:18080/v1/sql -H 'content-type: application/json' \
    -d '{"sql":"select count(*) as n from example"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])')
  [ "$stored" = "$acked" ] && break
  sleep 0.2
done
echo "events acknowledged: $acked; events the cluster holds: $stored"
if [ "$requests" = "$ok" ] && [ "$stored" = "$acked" ]; then
  echo "OK: no failed request, every acknowledged event stored once"
else
  echo "MISMATCH: see $work" >&2
  exit 1
fi
