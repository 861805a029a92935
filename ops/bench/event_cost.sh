#!/usr/bin/env bash
# What the cache event log costs puts, in one run on this host: three
# kvtier-server processes side by side, one with its event log and a
# watcher following every event (kvtierctl events --follow_s, printing to
# a file on this host), one with its log alone, one with
# --event_log_capacity=0; kvtier-bench puts small pages (8 and 64 KiB, where a per-page
# cost shows most) into each, three times in alternation, and the ratio of
# pages/s with events to pages/s without is printed per cell (the median of
# the three rounds each). The servers have 6 GiB RAM tiers, so that each
# cell's puts (a third of that) last long enough to measure.
#
#   ops/bench/event_cost.sh [BUILD_DIR] [-- extra kvtier-bench flags]
set -euo pipefail
export KVTIER_BUILD_DIR="$(realpath "${1:-build}")"
shift || true
[ "${1:-}" = "--" ] && shift
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib.sh"
work="$(mktemp -d /tmp/kvtier-event-cost.XXXXXX)"
trap 'stop_local_processes; rm -rf "$work"' EXIT

start_local_node "$work/watched" --ram_bytes=$((6 << 30)) --noucx
watched="$KVTIER_NODE_ADDR"
start_local_node "$work/log" --ram_bytes=$((6 << 30)) --noucx
log_only="$KVTIER_NODE_ADDR"
start_local_node "$work/none" --ram_bytes=$((6 << 30)) --noucx --event_log_capacity=0
without="$KVTIER_NODE_ADDR"
"$KVTIER_BUILD_DIR/bin/kvtierctl" --target="$watched" events --follow_s=3600 >"$work/events.txt" &
KVTIER_LOCAL_PIDS+=($!)

bench() {
  "$KVTIER_BUILD_DIR/bin/kvtier-bench" --target="$1" --ops_kinds=put --noucx \
    --page_sizes=8192,65536 --clients=1,4 --batch_pages=64 --duration_ms=2000 \
    --json="$2" "${@:3}" >/dev/null
}
for round in 1 2 3; do
  bench "$watched" "$work/watched$round.json" "$@"
  bench "$log_only" "$work/log$round.json" "$@"
  bench "$without" "$work/without$round.json" "$@"
done
python3 - "$work" <<'PY'
import json, sys
work = sys.argv[1]
def best(name):
    cells = {}
    for r in (1, 2, 3):
        for c in json.load(open(f"{work}/{name}{r}.json"))["cells"]:
            cells.setdefault((c["page_bytes"], c["clients"]), []).append(c["pages_per_s"])
    return {k: sorted(v)[1] for k, v in cells.items()}  # the median of three
w, l, n = best("watched"), best("log"), best("without")
print("pages/s of puts: with the event log and a watcher, with the log alone, without a log")
print("page_bytes clients  watched      log  without  watched/without  log/without")
for k in sorted(w):
    print(f"{k[0]:10d} {k[1]:7d} {w[k]:8.0f} {l[k]:8.0f} {n[k]:8.0f} {w[k] / n[k]:16.2f} "
          f"{l[k] / n[k]:12.2f}")
PY
echo "events the watcher printed: $(grep -c stored "$work/events.txt" || true)"
