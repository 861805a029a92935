#!/usr/bin/env bash
# The main job: installs what is missing, builds, starts a single-node
# kvtier-server with its embedded defaults (data under ./kvtier-data, 1 GiB
# RAM tier, 8 GiB disk tier, 127.0.0.1:50051), runs SmolLM2-135M-Instruct
# over a long document (prose notes hiding a secret code, then the question)
# with the ArkVale policy at 1/8 of the KV cache, its
# evicted pages backed up to and recalled from that server, compares the
# output with a full-cache run, then asks the same document a second
# question, once loading its stored prefix from the server (prefix reuse)
# and once recomputing it, and prints both times to first token, the pages
# loaded and the answer; then stops the server. The first run
# downloads the model (~93 MB) into .cache/; later runs reuse it.
#
# Environment: KVTIER_PROMPT_TOKENS (default 2048), KVTIER_STEPS (96),
# KVTIER_BUDGET_FRACTION (8), KVTIER_POLICY (arkvale), KVTIER_DOCUMENT
# (travel; workshop, or landmark: the papers' repeated sentences).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_debian_packages
fetch_smollm2
build_kvtier

server="$KVTIER_BUILD_DIR/bin/kvtier-server"
eval_bin="$KVTIER_BUILD_DIR/bin/kvtier-eval"
ctl="$KVTIER_BUILD_DIR/bin/kvtierctl"
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

# The worker runs on a GPU when one is present (KVTIER_DEVICE=cpu|cuda|cuda:N
# overrides); should the GPU run fail, the demo runs again on the CPU.
device=${KVTIER_DEVICE:-auto}
if [ "$device" = auto ]; then
  device=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    device=cuda
  fi
fi
run_demo() {
  log "SmolLM2 at 1/${KVTIER_BUDGET_FRACTION:-8} of the KV cache with" \
    "${KVTIER_POLICY:-arkvale} on $1, pages in kvtier-server"
  "$eval_bin" longrun --model "$KVTIER_SMOLLM2_GGUF" --target "$target" --device "$1" \
    --prompt_tokens "${KVTIER_PROMPT_TOKENS:-2048}" --steps "${KVTIER_STEPS:-96}" \
    --budget_fraction "${KVTIER_BUDGET_FRACTION:-8}" --policy "${KVTIER_POLICY:-arkvale}" \
    --document "${KVTIER_DOCUMENT:-travel}"
}
if ! run_demo "$device"; then
  [ "$device" = cpu ] && exit 1
  log "the run on $device failed; running it on the CPU"
  run_demo cpu
fi
"$ctl" --target "$target" stats
log "stopping kvtier-server"
