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
build="${1:-build}"
server="$build/bin/kvtier-server"
ctl="$build/bin/kvtierctl"
ttl="${LEASE_TTL_S:-10}"
pages="${PAGES:-2048}"
work="$(mktemp -d /tmp/kvtier-failover.XXXXXX)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

cport="$(free_port)"; peer="$(free_port)"
etcd --name=default --data-dir="$work/etcd" --listen-client-urls="http://127.0.0.1:$cport" \
  --advertise-client-urls="http://127.0.0.1:$cport" --listen-peer-urls="http://127.0.0.1:$peer" \
  --initial-advertise-peer-urls="http://127.0.0.1:$peer" \
  --initial-cluster="default=http://127.0.0.1:$peer" 2>"$work/etcd.log" &
pids+=($!); disown
for _ in $(seq 1 100); do grep -q "ready to serve client requests" "$work/etcd.log" && break; sleep 0.1; done
declare -A pid addr
for n in A B C; do
  mkdir -p "$work/$n"
  "$server" --listen=127.0.0.1:0 --port_file="$work/$n/port" --data_dir="$work/$n/data" \
    --ram_bytes=$((256 << 20)) --node_id="node-$n" --etcd_endpoints="127.0.0.1:$cport" \
    --lease_ttl_s="$ttl" 2>"$work/$n/log" &
  pid[$n]=$!; pids+=($!); disown
  for _ in $(seq 1 300); do grep -q "member up" "$work/$n/log" 2>/dev/null && break; sleep 0.1; done
  addr[$n]="127.0.0.1:$(cat "$work/$n/port")"
done
python3 -c "import sys; sys.stdout.write(''.join(chr(65 + i % 26) for i in range($pages * 16)))" \
  >"$work/prompt.txt"
layout=(--n_kv_heads=2 --head_dim=64 --dtype=f16 --layers=2 --text="$work/prompt.txt")
"$ctl" --target="${addr[A]}" "${layout[@]}" --pin_ttl_ms=3600000 cluster-put
pinned_on() { "$ctl" --target="$1" stats | awk '/^  disk/ { for (i = 1; i <= NF; ++i) if ($i == "pinned") print $(i + 1) }'; }
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
