#!/usr/bin/env bash
# Query benchmark: loads N events (default 20 M) into a fresh tally through
# its HTTP ingest, flushes and compacts, then runs bench/query.py: the same
# SQL through tally, DuckDB and chDB on tally's own Parquet segments.
#
#   bench/query.sh [EVENTS] [REPEATS]     e.g. bench/query.sh 100000000
set -euo pipefail
cd "$(dirname "$0")/.."
EVENTS=${1:-20000000}
REPEATS=${2:-5}
python3 -c "import duckdb, pytz" 2>/dev/null || pip install --quiet duckdb pytz
python3 -c "import chdb" 2>/dev/null || pip install --quiet chdb || echo "chdb unavailable; its column will say n/a"
# TALLY_BIN=path measures that build (e.g. an earlier commit's) instead.
if [ -z "${TALLY_BIN:-}" ]; then cargo build --release --quiet; fi
BIN=${TALLY_BIN:-target/release/tally}
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$DIR"' EXIT
start() { # port, extra args...
  local port=$1; shift
  "$BIN" serve --data-dir "$DIR/data" --listen 127.0.0.1:$port "$@" >"$DIR/out.$port" 2>"$DIR/err.$port" &
  until curl -sf http://127.0.0.1:$port/readyz >/dev/null; do sleep 0.2; done
}
start 18431 --query-cache-bytes 0 --flush-bytes 268435456 --memory-limit-bytes 1073741824
echo "# loading $EVENTS events over 7 days, in rounds of at most 20 M, each flushed"
t0=$(date +%s)
left=$EVENTS
while [ "$left" -gt 0 ]; do
  n=$(( left < 20000000 ? left : 20000000 ))
  "$BIN" bench --url http://127.0.0.1:18431 --stream pv --events "$n" --batch 5000 \
    --connections 4 --span-hours 168 --bodies 512 --label load | tail -1
  curl -sf -X POST http://127.0.0.1:18431/v1/admin/flush >/dev/null
  left=$(( left - n ))
done
stored=$(curl -sf http://127.0.0.1:18431/v1/streams/pv | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"])')
if [ "$stored" != "$EVENTS" ]; then
  echo "stored $stored events, not $EVENTS (requests refused with 503 are not retried by the loader)" >&2
  exit 1
fi
echo "# loaded and flushed in $(( $(date +%s) - t0 )) s; $(du -sh "$DIR/data/segments" | cut -f1) of segments"
python3 bench/query.py http://127.0.0.1:18431 "$DIR/data" pv "$REPEATS"
kill %1; wait %1 2>/dev/null || true
start 18432
TALLY_CACHED_URL=http://127.0.0.1:18432 python3 - "$DIR/data" <<'PY'
import os, sys, runpy
sys.argv = ["query.py", "http://127.0.0.1:18432", sys.argv[1], "pv", "1"]
os.environ["TALLY_CACHE_ONLY"] = "1"
runpy.run_path("bench/query.py")
PY
