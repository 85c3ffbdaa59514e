#!/usr/bin/env bash
# The crash test of the suite, run for longer: CYCLES (default 200) rounds of
# concurrent writers and SIGKILL at a random moment, then a check with DuckDB
# that every acknowledged event is present exactly once.
# Usage: bench/crash-soak.sh [cycles]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install --quiet duckdb
TALLY_CRASH_CYCLES=${1:-200} cargo test -q -p tally --test it -- --exact \
  crash::kill9_under_concurrent_writers_loses_and_duplicates_nothing --nocapture
