#!/usr/bin/env bash
# GET /rates latency on the real data set, cold (first answer to each
# question: SQL over the stored prices) and warm (the cached answer), with
# DuckDB answering the same questions in-process as the reference.
#
#   bench/rates.sh [QUESTIONS] [DUMP]     (default 500, examples/rates/rates.sql.gz)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500}
DUMP=${2:-examples/rates/rates.sql.gz}
python3 -c "import duckdb" 2>/dev/null || pip install --quiet duckdb
cargo build --release --quiet
DIR=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait; rm -rf "$DIR"' EXIT
PORT=18480
target/release/tally serve --data-dir "$DIR/data" --listen 127.0.0.1:$PORT >"$DIR/out" 2>"$DIR/err" &
until curl -sf http://127.0.0.1:$PORT/readyz >/dev/null; do sleep 0.1; done
python3 examples/rates/load.py http://127.0.0.1:$PORT "$DUMP"
python3 bench/rates.py http://127.0.0.1:$PORT "$DUMP" "$N"
