#!/usr/bin/env bash
# Rollup benchmark, in one run:
#  1. ingest cost: the same load into a server without rollups and into one
#     with three rollups (events/s of each, ratio);
#  2. the dashboard query (1 day, hourly, top 10 countries with uniq and
#     p95) over N events (default 100 M) answered from a rollup, against
#     DuckDB computing it from the raw Parquet segments;
#  3. freshness: from sending an event to seeing it in a rollup answer.
#
#   bench/rollup.sh [EVENTS] [INGEST_EVENTS]     e.g. bench/rollup.sh 100000000 10000000
#   (ROUNDS=N: ingest rounds, default 3; SPANS="1 168": event-time spans in
#   hours; SKIP_INGEST=1 / SKIP_QUERY=1: one part only)
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-100000000}
INGEST_EVENTS=${2:-10000000}
python3 -c "import duckdb" 2>/dev/null || pip install --quiet duckdb
cargo build --release --quiet
BIN=target/release/tally
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$DIR"' EXIT
cat > "$DIR/rollups.toml" <<'TOML'
[[rollup]]
name = "dashboard"
stream = "pv"
intervals = ["hour", "day"]
group_by = ["country"]
aggregates = ["count", "uniq(bytes)", "quantiles(duration_ms)"]

[[rollup]]
name = "paths"
stream = "pv"
intervals = ["hour"]
group_by = ["path"]
aggregates = ["count", "avg(duration_ms)"]

[[rollup]]
name = "browsers"
stream = "pv"
intervals = ["hour"]
group_by = ["browser", "country"]
aggregates = ["count", "sum(bytes)"]
TOML
start() { # dir, port, extra args...
  local dir=$1 port=$2; shift 2
  "$BIN" serve --data-dir "$dir" --listen 127.0.0.1:$port --flush-bytes 268435456 \
    --memory-limit-bytes 1073741824 "$@" >"$DIR/out.$port" 2>"$DIR/err.$port" &
  SERVER=$!
  until curl -sf http://127.0.0.1:$port/readyz >/dev/null; do sleep 0.2; done
}
load() { # port, events, label[, span hours]
  local left=$2
  while [ "$left" -gt 0 ]; do
    local n=$(( left < 20000000 ? left : 20000000 ))
    "$BIN" bench --url http://127.0.0.1:$1 --stream pv --events "$n" --batch 5000 \
      --connections 4 --span-hours "${4:-168}" --bodies 512 --label "$3" | tail -1
    curl -sf -X POST http://127.0.0.1:$1/v1/admin/flush >/dev/null
    left=$(( left - n ))
  done
}
eps() { python3 -c 'import json,sys; print(int(json.loads(sys.stdin.readlines()[-1])["events_per_sec"]))'; }

if [ "${SKIP_INGEST:-}" = "" ]; then
# Event times over the last hour (live traffic: few rollup cells, in cache)
# and over a week (every batch touches ~170 hours' cells); each pair of
# runs ROUNDS times (default 3), alternating, as the machine is shared,
# and the median cost is the figure.
for span in ${SPANS:-1 168}; do
  echo "# 1. ingest: $INGEST_EVENTS events over the last $span h, without and with 3 rollups"
  costs=""
  for round in $(seq "${ROUNDS:-3}"); do
    rm -rf "$DIR/plain" "$DIR/rolled"
    start "$DIR/plain" 18441
    plain=$(load 18441 "$INGEST_EVENTS" plain $span | eps)
    kill $SERVER; wait $SERVER 2>/dev/null || true
    start "$DIR/rolled" 18442 --config "$DIR/rollups.toml"
    rolled=$(load 18442 "$INGEST_EVENTS" rollups $span | eps)
    kill $SERVER; wait $SERVER 2>/dev/null || true
    python3 -c "print(f'span {$span} h, round $round: events/s no rollups {$plain:,}, 3 rollups {$rolled:,}; cost {100*(1-$rolled/$plain):.1f} %')"
    costs="$costs $(python3 -c "print(1-$rolled/$plain)")"
  done
  python3 -c "import statistics; print(f'span $span h: median cost {100*statistics.median([$(echo $costs | tr ' ' ',')]):.1f} %')"
done
rm -rf "$DIR/plain" "$DIR/rolled"
fi

[ "${SKIP_QUERY:-}" = "" ] || exit 0
echo "# 2. dashboard query over $EVENTS events"
start "$DIR/data" 18443 --config "$DIR/rollups.toml" --query-cache-bytes 0
load 18443 "$EVENTS" load >/dev/null
python3 bench/rollup.py http://127.0.0.1:18443 "$DIR/data" pv
