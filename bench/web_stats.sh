#!/usr/bin/env bash
# Stats API latency over N tracker events (default 100 M) sent through the
# backfill, with DuckDB answering the event-level questions over the same
# events in the same run (bench/web_stats.py).
#
#   bench/web_stats.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-100000000}
python3 -c 'import duckdb, pyarrow, pytz' 2>/dev/null || pip install -q duckdb pyarrow pytz
cargo build --release --quiet
BIN=target/release/tally
DIR=$(mktemp -d)
trap 'status=$?; [ $status -eq 0 ] || tail -20 "$DIR/err" >&2; kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$DIR"' EXIT
PORT=18483
"$BIN" serve --data-dir "$DIR/data" --listen 127.0.0.1:$PORT --web-site bench.test >"$DIR/out" 2>"$DIR/err" &
PID=$!
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.1; done
python3 bench/web_stats.py --url http://127.0.0.1:$PORT --events "$N"
echo "server peak RSS: $(awk '/VmHWM/ {printf "%.0f MiB", $2/1024}' /proc/$PID/status)"
echo "data dir: $(du -sh "$DIR/data" | cut -f1)"
curl -sf http://127.0.0.1:$PORT/metrics | grep -E '^tally_web_stats_reads_total' || true
