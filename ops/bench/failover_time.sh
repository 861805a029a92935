#!/usr/bin/env bash
# How long a cluster takes to notice a dead node and to restore its pinned
# pages' copies: etcd and three nodes on loopback (lease TTL LEASE_TTL_S,
# default 10), a prompt of PAGES pages x 2 layers stored and pinned through
# node A (R = 2), then node A killed with SIGKILL. Prints the seconds from
# the kill until node C lists A as MEMBER_DOWN, and until both survivors
# hold every pinned page again, and checks every page through C.
#
#   ops/bench/failover_time.sh [BUILD_DIR]    (env: LEASE_TTL_S, PAGES)
set -euo pipefail
export KVTIER_BUILD_DIR="$(realpath "${1:-build}")"
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
ctl="$KVTIER_BUILD_DIR/bin/kvtierctl"
ttl="${LEASE_TTL_S:-10}"
pages="${PAGES:-2048}"
work="$(mktemp -d /tmp/kvtier-failover.XXXXXX)"
trap 'stop_local_processes; rm -rf "$work"' EXIT
now() { date +%s.%N; }

start_local_etcd "$work/etcd"
declare -A pid addr
for n in A B C; do
  start_local_node "$work/$n" --ram_bytes=$((256 << 20)) --node_id="node-$n" \
    --etcd_endpoints="$KVTIER_ETCD_ENDPOINT" --lease_ttl_s="$ttl"
  pid[$n]=$KVTIER_NODE_PID
  addr[$n]=$KVTIER_NODE_ADDR
done
python3 -c "import sys; sys.stdout.write(''.join(chr(65 + i % 26) for i in range($pages * 16)))" \
  >"$work/prompt.txt"
layout=(--n_kv_heads=2 --head_dim=64 --dtype=f16 --layers=2 --text="$work/prompt.txt")
"$ctl" --target="${addr[A]}" "${layout[@]}" --pin_ttl_ms=3600000 cluster-put
pinned_on() {
  "$ctl" --target="$1" stats |
    awk '/^  disk/ { for (i = 1; i <= NF; ++i) if ($i == "pinned") print $(i + 1) }'
}
want=$((pages * 2))

start="$(now)"
kill -9 "${pid[A]}"
down=""
restored=""
while [ -z "$down" ] || [ -z "$restored" ]; do
  if [ -z "$down" ] && "$ctl" --target="${addr[C]}" members | grep -q "node-A .*MEMBER_DOWN"; then
    down="$(now)"
  fi
  if [ -z "$restored" ] && [ "$(pinned_on "${addr[B]}")" = "$want" ] &&
     [ "$(pinned_on "${addr[C]}")" = "$want" ]; then
    restored="$(now)"
  fi
  if python3 -c "import sys; sys.exit(0 if float('$(now)') - float('$start') > 120 else 1)"; then
    echo "gave up after 120 s (down: ${down:-no}, restored: ${restored:-no})"; exit 1
  fi
  sleep 0.05
done
python3 -c "print('lease TTL %s s, %d pinned page-layers: node-A seen down after %.2f s, every pinned page on both survivors after %.2f s' % ('$ttl', $want, float('$down') - float('$start'), float('$restored') - float('$start')))"
"$ctl" --target="${addr[C]}" "${layout[@]}" cluster-get
