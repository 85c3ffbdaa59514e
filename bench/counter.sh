#!/usr/bin/env bash
# Counter benchmark, in one run:
#  1. value reads over HTTP with keep-alive (GET /getvalue, wrk, one client
#     thread, C connections) against Redis GET (redis-benchmark, one client
#     thread, the same connections) on the same machine: requests/s and
#     latency percentiles of both;
#  2. accepted increments/s: USERS logged-in users clicking in turn
#     (window 1 ms so each may click again at once), every accepted click a
#     durable event (fsync per group commit).
#
#   bench/counter.sh            (DURATION=10s CONNECTIONS=64 USERS=256)
# Needs wrk and redis-server/redis-benchmark (Debian's wrk, redis-server,
# redis-tools); installs them when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
USERS=${USERS:-256}
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-benchmark >/dev/null || need+=(redis-tools)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
cargo build --release --quiet
BIN=target/release/tally
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$DIR"' EXIT
PORT=18470
REDIS_PORT=18471

cat > "$DIR/tally.toml" <<TOML
[counter]
window = "1ms"
registrations_per_address = 100000
login_attempts_per_address = 100000
TOML
"$BIN" serve --data-dir "$DIR/data" --listen 127.0.0.1:$PORT --config "$DIR/tally.toml" \
  >"$DIR/out" 2>"$DIR/err" &
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.1; done
redis-server --port $REDIS_PORT --save "" --appendonly no >"$DIR/redis.log" 2>&1 &
until redis-cli -p $REDIS_PORT ping >/dev/null 2>&1; do sleep 0.1; done
redis-cli -p $REDIS_PORT set key:__rand_int__ 42 >/dev/null

echo "== value reads, $CONNECTIONS keep-alive connections, $DURATION"
wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency http://127.0.0.1:$PORT/getvalue >"$DIR/wrk.txt"
t_rps=$(awk '/^Requests\/sec/ {print $2}' "$DIR/wrk.txt")
t_p50=$(awk '$1=="50%" {print $2}' "$DIR/wrk.txt")
t_p99=$(awk '$1=="99%" {print $2}' "$DIR/wrk.txt")
t_err=$(awk '/Non-2xx/ {print $5}' "$DIR/wrk.txt")
# The same number of requests as tally served, from one client thread.
n=$(awk '/requests in/ {print $1}' "$DIR/wrk.txt")
redis-benchmark -p $REDIS_PORT -t get -c "$CONNECTIONS" -n "$n" --precision 3 >"$DIR/redis.txt" 2>&1
r_rps=$(grep -a "throughput summary:" "$DIR/redis.txt" | awk '{print $3}')
# The line under "avg min p50 p95 p99 max".
r_sum=$(grep -a -A4 "Summary:" "$DIR/redis.txt" | tail -1)
r_p50=$(echo "$r_sum" | awk '{print $3}')
r_p99=$(echo "$r_sum" | awk '{print $5}')
printf "%-22s %12s %10s %10s\n" "" "requests/s" "p50" "p99"
printf "%-22s %12s %10s %10s  (non-2xx: %s)\n" "tally GET /getvalue" "$t_rps" "$t_p50" "$t_p99" "${t_err:-0}"
printf "%-22s %12s %9sms %9sms\n" "redis GET" "$r_rps" "$r_p50" "$r_p99"
awk -v t="$t_rps" -v r="$r_rps" 'BEGIN { printf "tally / redis requests/s: %.2f\n", t / r }'

echo "== increments: $USERS users, window 1 ms, $CONNECTIONS connections, $DURATION"
CSRF=$(printf '0%.0s' $(seq 64))
seq "$USERS" | xargs -P 4 -I{} curl -sf -o /dev/null -D - -X POST \
  -H "Cookie: tally_csrf=$CSRF" -H "X-CSRF-Token: $CSRF" \
  -d '{"username":"bench{}","password":"correct horse battery"}' \
  http://127.0.0.1:$PORT/account/register | awk -F'[=;]' '/^set-cookie: tally_session=/ {print $2}' >"$DIR/sessions"
sessions=$(wc -l <"$DIR/sessions")
[ "$sessions" -eq "$USERS" ] || { echo "registered $sessions of $USERS users"; exit 1; }
{
  echo "local csrf = \"$CSRF\""
  echo "local sessions = {"
  sed 's/.*/  "&",/' "$DIR/sessions"
  echo "}"
  cat <<'LUA'
local i = 0
request = function()
  i = i + 1
  local s = sessions[(i % #sessions) + 1]
  return wrk.format("POST", "/counter/main/inc", {
    ["Cookie"] = "tally_session=" .. s .. "; tally_csrf=" .. csrf,
    ["X-CSRF-Token"] = csrf,
  }, "")
end
LUA
} >"$DIR/inc.lua"
before=$(curl -sf http://127.0.0.1:$PORT/getvalue | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])')
wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "$DIR/inc.lua" http://127.0.0.1:$PORT >"$DIR/inc.txt"
after=$(curl -sf http://127.0.0.1:$PORT/getvalue | python3 -c 'import json,sys; print(json.load(sys.stdin)["value"])')
secs=$(awk '/requests in/ {sub(/s,/, "", $4); print $4}' "$DIR/inc.txt")
refused=$(awk '/Non-2xx/ {print $5}' "$DIR/inc.txt")
answered=$(awk '/requests in/ {print $1}' "$DIR/inc.txt")
# Every 200 is one more on the counter; requests still in flight when wrk
# stops (at most one per connection) are accepted but not counted by wrk.
extra=$(( (after - before) - (answered - ${refused:-0}) ))
if [ "$extra" -lt 0 ] || [ "$extra" -gt "$CONNECTIONS" ]; then
  echo "MISMATCH: $((answered - ${refused:-0})) increments answered 200, the value moved by $((after - before))"
  exit 1
fi
awk -v a="$after" -v b="$before" -v s="$secs" -v r="${refused:-0}" -v p99="$(awk '$1=="99%" {print $2}' "$DIR/inc.txt")" \
  'BEGIN { printf "accepted increments: %d in %.1f s = %.0f/s (p99 %s; refused as in flight or too soon: %d)\n", a - b, s, (a - b) / s, p99, r }'
