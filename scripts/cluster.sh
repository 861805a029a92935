#!/usr/bin/env bash
# A three-node kvtier cluster on loopback: installs what is missing, builds,
# starts a local etcd and three kvtier-server nodes registered in it
# (lease TTL 3 s, two copies of every page), stores a prompt's pages
# through node A, finds and verifies them through node C, kills A with
# SIGKILL, shows every page still served from its other copy, waits until
# etcd's lease expiry marks A down, reads again (pages A held are copied
# to their new owners in the background and as they are read), shows
# where a router following the nodes' cache event streams would send the
# prompt before and after, and stops everything. Work files live in a
# temporary directory that is removed at the end.
#
# Environment: KVTIER_CLUSTER_TEXT (default README.md: the "prompt", one
# token per byte, its first 16 KiB).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_debian_packages
build_kvtier

ctl="$KVTIER_BUILD_DIR/bin/kvtierctl"
work="$(mktemp -d /tmp/kvtier-cluster.XXXXXX)"
trap 'stop_local_processes; rm -rf "$work"' EXIT

start_local_etcd "$work/etcd"
log "etcd serving at $KVTIER_ETCD_ENDPOINT"
declare -A node_pid node_addr
for name in A B C; do
  start_local_node "$work/$name" --ram_bytes=$((256 << 20)) --node_id="node-$name" \
    --etcd_endpoints="$KVTIER_ETCD_ENDPOINT" --lease_ttl_s=3
  node_pid[$name]=$KVTIER_NODE_PID
  node_addr[$name]=$KVTIER_NODE_ADDR
  log "node-$name up at ${node_addr[$name]}"
done

head -c 16384 "${KVTIER_CLUSTER_TEXT:-$KVTIER_ROOT/README.md}" >"$work/prompt.txt"
layout=(--n_kv_heads=2 --head_dim=64 --dtype=f16 --layers=2 --text="$work/prompt.txt")

log "the member view, as node-A holds it"
"$ctl" --target="${node_addr[A]}" members
log "storing the prompt's pages through node-A (R=2, W=2)"
"$ctl" --target="${node_addr[A]}" "${layout[@]}" cluster-put
log "finding them through node-C"
"$ctl" --target="${node_addr[C]}" "${layout[@]}" cluster-get
log "where a router sends this prompt, from every node's cache event stream (each page"
log "lives on its own two owners, so a node holds the prompt up to its first page elsewhere)"
"$ctl" --target="${node_addr[C]}" "${layout[@]}" route

log "killing node-A (SIGKILL)"
kill -9 "${node_pid[A]}"
log "reading through node-C at once, before etcd notices: every page from its other copy"
"$ctl" --target="${node_addr[C]}" "${layout[@]}" cluster-get
log "waiting for node-A's lease to expire"
for _ in $(seq 1 100); do
  "$ctl" --target="${node_addr[C]}" members | grep -q "node-A .*MEMBER_DOWN" && break
  sleep 0.2
done
"$ctl" --target="${node_addr[C]}" members
log "reading again with the new view: the survivors copied node-A's pages between them in"
log "the background (read repair copies any they had not reached yet)"
"$ctl" --target="${node_addr[C]}" "${layout[@]}" cluster-get
log "and again: every page has its two copies, nothing left to repair"
"$ctl" --target="${node_addr[C]}" "${layout[@]}" cluster-get
log "the router's view now: node-A is gone, its pages are on B and C"
"$ctl" --target="${node_addr[C]}" "${layout[@]}" route
log "stopping the nodes and etcd"
