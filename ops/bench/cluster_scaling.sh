#!/usr/bin/env bash
# Per-member throughput of a cluster of 1 and of 3 nodes, and the latency
# of a cross-node Lookup, in one run on this host: for each size, a fresh
# etcd and N kvtier-server nodes on loopback, then kvtier-cluster-bench
# (R = min(2, N) copies, W = R) through all of them. Prints each run's JSON
# and the 3-node / 1-node ratios of per-member put copies/s and gets/s.
#
#   ops/bench/cluster_scaling.sh [BUILD_DIR] [-- extra kvtier-cluster-bench flags]
#
# On a host with fewer cores than nodes + clients, the nodes share the
# cores, which bounds what a member can do; the ratios say so.
set -euo pipefail
export KVTIER_BUILD_DIR="$(realpath "${1:-build}")"
shift || true
[ "${1:-}" = "--" ] && shift
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
work="$(mktemp -d /tmp/kvtier-scaling.XXXXXX)"
trap 'stop_local_processes; rm -rf "$work"' EXIT

run_cluster() {
  local n=$1 dir="$work/n$1" seeds=""
  shift
  start_local_etcd "$dir/etcd"
  for i in $(seq 1 "$n"); do
    start_local_node "$dir/node$i" --ram_bytes=$((1 << 30)) --node_id="node$i" \
      --etcd_endpoints="$KVTIER_ETCD_ENDPOINT"
    seeds="$seeds${seeds:+,}$KVTIER_NODE_ADDR"
  done
  local r=$(( n < 2 ? n : 2 ))
  "$KVTIER_BUILD_DIR/bin/kvtier-cluster-bench" --seeds="$seeds" --replicas="$r" \
    --write_quorum="$r" --json="$dir/result.json" "$@"
  cat "$dir/result.json"
  stop_local_processes
}

echo "== 1 node"; run_cluster 1 "$@"
echo "== 3 nodes"; run_cluster 3 "$@"
python3 - "$work/n1/result.json" "$work/n3/result.json" <<'PY'
import json, sys
one, three = (json.load(open(p)) for p in sys.argv[1:3])
print("per-member put copies/s, 3 nodes / 1 node: %.2f" %
      (three["put_copies_per_member_per_s"] / one["put_copies_per_member_per_s"]))
print("per-member gets/s, 3 nodes / 1 node: %.2f" %
      (three["get_pages_per_member_per_s"] / one["get_pages_per_member_per_s"]))
print("lookup of %d pages: 1 node p50 %.0f us, 3 nodes p50 %.0f us (p99 %.0f / %.0f)" %
      (three["lookup_chain"], one["lookup_p50_us"], three["lookup_p50_us"],
       one["lookup_p99_us"], three["lookup_p99_us"]))
PY
