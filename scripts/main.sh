#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a single-node
# kvtier-server with its embedded defaults (data under ./kvtier-data, 1 GiB
# RAM tier, 8 GiB disk tier, 127.0.0.1:50051) and runs a short session
# against it, then stops the server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_debian_packages
build_kvtier

server="$KVTIER_BUILD_DIR/kvstore/kvtier-server"
ctl="$KVTIER_BUILD_DIR/ops/kvtierctl"
target="127.0.0.1:50051"

log "starting kvtier-server (defaults) in $PWD"
"$server" &
server_pid=$!
trap 'kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true' EXIT

# Wait (bounded) until the server answers.
for _ in $(seq 1 100); do
  if "$ctl" --target "$target" stats >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    log "kvtier-server exited during start-up"; exit 1
  fi
  sleep 0.1
done

"$ctl" --target "$target" demo
log "stopping kvtier-server"
