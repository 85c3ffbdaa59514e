#!/usr/bin/env bash
# Cluster ingest benchmark: what cluster mode costs over JetStream itself.
#
# Three nats-servers clustered on loopback (scripts/nats-cluster.sh: JetStream
# with `sync_interval: always`, so an acknowledgement means on disk on a
# majority), an R3 stream, and, in one run, the same durable batch ingest
# (2,000-event NDJSON bodies, 8 connections):
#
#   single     - one tally node without --cluster (its own fsynced log)
#   jetstream  - the ceiling: a plain publisher sending the very records a
#                tally cluster wrote straight to an R3 stream with the same
#                settings, each with its own Nats-Msg-Id, 8 awaiting
#                acknowledgement at once (as 8 connections give tally); and
#                the same with 64 at once
#   cluster1   - three tally nodes on the cluster, all load through node 1
#   cluster3   - the same load spread over the three nodes
#   alone      - nodes 2 and 3 stopped, all load through node 1: one node
#                applying every record, as on a machine of its own, beside
#                the same three NATS servers the plain publisher had
#   jetstream_pinned, alone_pinned - the plain publisher and then node 1
#                alone again, with the three NATS servers held to CPU 0
#                and the load generator and node 1 to CPU 1 (taskset): the
#                same NATS capacity for both, and neither tally's nor the
#                publisher's work taken from it, as when NATS runs on
#                machines of its own. Unpinned, every process shares both
#                cores, and tally's parsing and segment writing take CPU
#                the servers would otherwise have (the plain publisher
#                sends ready-made records and takes almost none).
#
# While cluster1 and cluster3 run, every node's applied sequence is sampled
# every 5 ms (`tally bench --lag-nodes`): a node's apply lag is the time
# from the first node's having applied a sequence to its having applied it
# too. In cluster1, nodes 2 and 3 are the followers (they did not take the
# write). Everything shares the machine's cores: three NATS servers, three
# tally nodes that each apply every record, and the load generator.
#
# Usage: bench/cluster.sh [seconds per scenario, default 15]
#   TALLY_BIN=path measures that build instead of building target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-15}
scripts/install-nats.sh
if [ -z "${TALLY_BIN:-}" ]; then cargo build --release -q; fi
TALLY=${TALLY_BIN:-target/release/tally}
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; kill $(cat "$WORK"/nats/n*.pid 2>/dev/null) 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
RESULTS="$WORK/results.jsonl"
LOAD=(--batch 2000 --connections 8 --duration "$SECS")

wait_ready() { # URL LOG
  for _ in $(seq 1200); do curl -sf "$1/readyz" >/dev/null && return; sleep 0.05; done
  echo "$1 not ready within 60 s:" >&2; tail -20 "$2" >&2; exit 1
}
bench() { $TALLY bench "$@" | tee -a "$RESULTS"; }

echo "== single: one node, no cluster"
TALLY_LOG=warn $TALLY serve --data-dir "$WORK/single" --listen 127.0.0.1:18300 >"$WORK/single.log" 2>&1 &
PID=$!
wait_ready http://127.0.0.1:18300 "$WORK/single.log"
bench --url http://127.0.0.1:18300 "${LOAD[@]}" --label single
kill -TERM $PID; wait $PID || true

echo "== starting three nats-servers and three tally nodes"
NATS=$(scripts/nats-cluster.sh "$WORK/nats" 18400)
NODES=()
PIDS=()
# One after another: the first creates the stream.
for i in 1 2 3; do
  TALLY_LOG=warn $TALLY serve --data-dir "$WORK/node$i" --listen 127.0.0.1:1831$i \
    --cluster "$NATS" --node-id "node$i" --archive "$WORK/archive" \
    --cluster-max-bytes 8GiB >"$WORK/node$i.log" 2>&1 &
  NODES+=("http://127.0.0.1:1831$i")
  PIDS+=($!)
  wait_ready "http://127.0.0.1:1831$i" "$WORK/node$i.log"
done
ALL=$(IFS=,; echo "${NODES[*]}")

# Records for the plain publisher to send again: tally's own.
$TALLY bench --url "${NODES[0]}" --batch 2000 --connections 8 --duration 2 --label warmup >/dev/null

echo "== jetstream: the plain publisher, the same records"
bench --target jetstream --url "$NATS" --stream BENCH "${LOAD[@]}" --label jetstream
bench --target jetstream --url "$NATS" --stream BENCH --batch 2000 --connections 64 \
  --duration "$SECS" --label jetstream64

echo "== cluster1: all load through node 1"
bench --url "${NODES[0]}" "${LOAD[@]}" --lag-nodes "$ALL" --label cluster1
echo "== cluster3: load spread over three nodes"
bench --url "$ALL" "${LOAD[@]}" --lag-nodes "$ALL" --label cluster3
echo "== alone: nodes 2 and 3 stopped, all load through node 1"
kill -TERM "${PIDS[1]}" "${PIDS[2]}"; wait "${PIDS[1]}" "${PIDS[2]}" || true
bench --url "${NODES[0]}" "${LOAD[@]}" --label alone
echo "== pinned: NATS servers on CPU 0; the load and node 1 on CPU 1"
for p in $(cat "$WORK"/nats/n*.pid); do taskset -a -pc 0 "$p" >/dev/null; done
taskset -a -pc 1 "${PIDS[0]}" >/dev/null
taskset -c 1 $TALLY bench --target jetstream --url "$NATS" --stream BENCH "${LOAD[@]}" \
  --label jetstream_pinned | tee -a "$RESULTS"
taskset -c 1 $TALLY bench --url "${NODES[0]}" "${LOAD[@]}" --label alone_pinned | tee -a "$RESULTS"

python3 - "$RESULTS" "${NODES[@]}" <<'PY'
import json, sys
rows = {r["label"]: r for r in map(json.loads, open(sys.argv[1]))}
nodes = sys.argv[2:]
eps = lambda l: rows[l]["events_per_sec"]
print("\n| run | events/s | requests/s | p50 ms | p99 ms | non-2xx |")
print("|---|---:|---:|---:|---:|---:|")
for l in ["single", "jetstream", "jetstream64", "cluster1", "cluster3", "alone", "jetstream_pinned", "alone_pinned"]:
    r = rows[l]
    bad = sum(v for k, v in r["statuses"].items() if not k.startswith("2"))
    print(f"| {l} | {eps(l):,.0f} | {r['requests_per_sec']:,.1f} | {r['latency_ms']['p50']:.1f} | {r['latency_ms']['p99']:.1f} | {bad} |")
print()
for l in ["cluster1", "cluster3", "alone"]:
    print(f"{l}: {eps(l) / eps('jetstream'):.0%} of the plain publisher at the same 8 in flight, "
          f"{eps(l) / eps('jetstream64'):.0%} of it at 64, {eps(l) / eps('single'):.0%} of single-node tally")
print(f"alone_pinned: {eps('alone_pinned') / eps('jetstream_pinned'):.0%} of the plain publisher, "
      "each with the NATS servers on a core of their own")
for l, followers in [("cluster1", nodes[1:]), ("cluster3", nodes)]:
    lag = rows[l]["apply_lag_ms"]
    for n in followers:
        s = lag[n]
        ms = lambda k: "n/a" if s[k] is None else f"{s[k]:.0f} ms"
        print(f"{l} apply lag {n}: p50 {ms('p50')}, p99 {ms('p99')}, max {ms('max')} ({s['samples']} samples)")
PY
