#!/usr/bin/env bash
# Runs the fuzzing campaign: every target under fuzz/ for SECONDS each
# (default 600), on the nightly toolchain, with cargo-fuzz installed from
# crates.io if missing. Each target's corpus grows in fuzz/corpus/<target>
# (merged back small with -merge), a crashing input lands in
# fuzz/artifacts/<target>/ (commit it: the stable test
# `tally-fuzzing::every_corpus_and_crash_file_replays` replays it in CI),
# and the executions per target are printed and kept in
# target/fuzz-summary.txt.
# The targets are built without a sanitizer by default (FUZZ_SANITIZER=none):
# tally's parsers are safe Rust, so what fuzzing looks for is panics,
# failed checks, hangs and runaway memory, which need none, and the runs
# are several times faster. FUZZ_SANITIZER=address builds with ASan.
# FUZZ_RUNS=N stops each target after N executions instead (the seconds
# are then a cap).
# Usage: scripts/fuzz.sh [seconds per target] [target ...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
shift || true
export PATH="$HOME/.cargo/bin:$PATH"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "installing: cargo-fuzz (crates.io)"
  cargo install --quiet --locked cargo-fuzz
fi
san=${FUZZ_SANITIZER:-none}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list --fuzz-dir fuzz)
fi
summary=${FUZZ_SUMMARY:-target/fuzz-summary.txt}
mkdir -p target
: >"$summary"
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="target/fuzz-$t.log"
  echo "== $t: ${secs}s"
  if cargo +nightly fuzz run -s "$san" --fuzz-dir fuzz "$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" ${FUZZ_RUNS:+-runs="$FUZZ_RUNS"} -max_len=65536 -rss_limit_mb=4096 -timeout=20 \
      -artifact_prefix="fuzz/artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    outcome=ok
  else
    outcome=CRASH
    status=1
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
  took=$(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | grep -o 'in [0-9]*' | tail -1 | grep -o '[0-9]*' || true)
  line="$t: ${execs:-?} executions in ${took:-$secs}s, $outcome, crash files kept: $crashes"
  echo "$line" | tee -a "$summary"
  # Keep the corpus small: only inputs that add coverage.
  tmp=$(mktemp -d)
  cargo +nightly fuzz run -s "$san" --fuzz-dir fuzz "$t" "$tmp" "fuzz/corpus/$t" -- -merge=1 >/dev/null 2>&1 || true
  if [ -n "$(ls -A "$tmp")" ]; then
    rm -rf "fuzz/corpus/$t" && mv "$tmp" "fuzz/corpus/$t"
  else
    rm -rf "$tmp"
  fi
done
echo "summary in $summary"
exit $status
