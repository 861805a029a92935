#!/usr/bin/env bash
# What the cache event log costs puts, in one run on this host: two
# kvtier-server processes side by side, one with its event log and a
# watcher following it (kvtierctl events --follow_s), one with
# --event_log_capacity=0; kvtier-bench puts small pages (where a per-page
# cost shows most) into each, twice in alternation, and the ratio of
# pages/s with events to pages/s without is printed per cell (best of the
# two rounds each).
#
#   ops/bench/event_cost.sh [BUILD_DIR] [-- extra kvtier-bench flags]
set -euo pipefail
export KVTIER_BUILD_DIR="$(realpath "${1:-build}")"
shift || true
[ "${1:-}" = "--" ] && shift
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
work="$(mktemp -d /tmp/kvtier-event-cost.XXXXXX)"
trap 'stop_local_processes; rm -rf "$work"' EXIT

start_local_node "$work/events" --ram_bytes=$((1 << 30)) --noucx
with="$KVTIER_NODE_ADDR"
start_local_node "$work/none" --ram_bytes=$((1 << 30)) --noucx --event_log_capacity=0
without="$KVTIER_NODE_ADDR"
"$KVTIER_BUILD_DIR/bin/kvtierctl" --target="$with" events --follow_s=3600 >"$work/events.txt" &
KVTIER_LOCAL_PIDS+=($!)

bench() {
  "$KVTIER_BUILD_DIR/bin/kvtier-bench" --target="$1" --ops_kinds=put --noucx \
    --page_sizes=4096,65536 --clients=1,4 --batch_pages=64 --duration_ms=2000 \
    --json="$2" "${@:3}" >/dev/null
}
for round in 1 2; do
  bench "$with" "$work/with$round.json" "$@"
  bench "$without" "$work/without$round.json" "$@"
done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def best(name):
    cells = {}
    for r in (1, 2):
        for c in json.load(open(f"{work}/{name}{r}.json"))["cells"]:
            k = (c["page_bytes"], c["clients"])
            cells[k] = max(cells.get(k, 0), c["pages_per_s"])
    return cells
w, n = best("with"), best("without")
print("page_bytes clients  pages/s with events  without   ratio")
for k in sorted(w):
    print(f"{k[0]:10d} {k[1]:7d} {w[k]:20.0f} {n[k]:8.0f} {w[k] / n[k]:7.2f}")
PY
echo "events the watcher printed: $(grep -c stored "$work/events.txt" || true)"
