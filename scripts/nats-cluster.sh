#!/usr/bin/env bash
# Starts three nats-servers clustered on loopback, each with JetStream on
# its own disk and `sync_interval: always` (deploy/nats/nats-server.conf's
# settings), and waits until each is healthy.
#
# Usage: scripts/nats-cluster.sh DIR [BASE_PORT]
#   Server i (0..2) takes client port BASE_PORT+i, routes BASE_PORT+10+i and
#   monitoring BASE_PORT+20+i (BASE_PORT defaults to 14222); its config,
#   log, store and pid file are in DIR. Prints the client URLs, comma-
#   separated. Stop them with: kill $(cat DIR/n*.pid)
set -euo pipefail
dir=$1 base=${2:-14222}
mkdir -p "$dir"
routes=$(for i in 0 1 2; do echo "nats-route://127.0.0.1:$((base + 10 + i))"; done | paste -sd, -)
urls=()
for i in 0 1 2; do
  cat >"$dir/n$i.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((base + i))
http: 127.0.0.1:$((base + 20 + i))
max_payload: 8MB
jetstream {
  store_dir: "$dir/js$i"
  sync_interval: always
}
cluster {
  name: tally-local
  listen: 127.0.0.1:$((base + 10 + i))
  routes: [$routes]
}
CONF
  nats-server -c "$dir/n$i.conf" >"$dir/n$i.log" 2>&1 &
  echo $! >"$dir/n$i.pid"
  urls+=("nats://127.0.0.1:$((base + i))")
done
for i in 0 1 2; do
  for _ in $(seq 300); do
    curl -fs "http://127.0.0.1:$((base + 20 + i))/healthz?js-enabled-only=true" >/dev/null && break
    sleep 0.1
  done
  curl -fs "http://127.0.0.1:$((base + 20 + i))/healthz?js-enabled-only=true" >/dev/null \
    || { echo "nats-server n$i did not become healthy; see $dir/n$i.log" >&2; exit 1; }
done
(IFS=,; echo "${urls[*]}")
