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
build="${1:-build}"
shift || true
[ "${1:-}" = "--" ] && shift
server="$build/bin/kvtier-server"
bench="$build/bin/kvtier-cluster-bench"
work="$(mktemp -d /tmp/kvtier-scaling.XXXXXX)"
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  pids=()
}
trap 'stop_all; rm -rf "$work"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

run_cluster() {
  local n=$1 dir="$work/n$1"
  shift
  mkdir -p "$dir"
  local cport peer
  cport="$(free_port)"; peer="$(free_port)"
  etcd --name=default --data-dir="$dir/etcd" --listen-client-urls="http://127.0.0.1:$cport" \
    --advertise-client-urls="http://127.0.0.1:$cport" --listen-peer-urls="http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
    --initial-cluster="default=http://127.0.0.1:$peer" 2>"$dir/etcd.log" &
  pids+=($!); disown
  for _ in $(seq 1 100); do grep -q "ready to serve client requests" "$dir/etcd.log" && break; sleep 0.1; done
  local seeds=""
  for i in $(seq 1 "$n"); do
    mkdir -p "$dir/node$i"
    "$server" --listen=127.0.0.1:0 --port_file="$dir/node$i/port" --data_dir="$dir/node$i/data" \
      --ram_bytes=$((1 << 30)) --node_id="node$i" --etcd_endpoints="127.0.0.1:$cport" \
      2>"$dir/node$i/log" &
    pids+=($!); disown
    for _ in $(seq 1 300); do grep -q "member up" "$dir/node$i/log" 2>/dev/null && break; sleep 0.1; done
    seeds="$seeds${seeds:+,}127.0.0.1:$(cat "$dir/node$i/port")"
  done
  local r=$(( n < 2 ? n : 2 ))
  "$bench" --seeds="$seeds" --replicas="$r" --write_quorum="$r" --json="$dir/result.json" "$@"
  cat "$dir/result.json"
  stop_all
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
