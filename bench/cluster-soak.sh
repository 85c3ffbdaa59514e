#!/usr/bin/env bash
# The cluster test of the suite, run for longer: N fault cycles (default
# 100) on one cluster of three nats-servers and three tally nodes, writers
# on every node throughout. Each cycle kills one NATS server with SIGKILL
# and restarts it, pauses another with SIGSTOP for 3 s, kills a tally node
# with SIGKILL and restarts it on its disk (which ones turns with the
# cycle), then checks every node for the cycle's acknowledged events:
# lost, duplicated, and stored though never acknowledged. At the end, a
# late node on an empty disk joins and every node's answers are compared
# with DuckDB's over all acknowledged events.
# Usage: bench/cluster-soak.sh [cycles]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-nats.sh
python3 -c "import duckdb" 2>/dev/null || python3 -m pip install --quiet duckdb
TALLY_CLUSTER_CYCLES=${1:-100} cargo test -q -p tally --test it -- --exact \
  cluster::every_acknowledged_event_is_on_every_node_once_through_nats_and_node_failures --nocapture
