#!/usr/bin/env bash
# Time from start to serving after a restart, and how long the background
# checksum check then takes, on a disk tier filled with GIB GiB of random
# pages (kvtierctl put-file, 64 KiB pages; RAM tier 64 MiB, so nearly all
# pages are on disk). Needs about GIB GiB free under WORK_DIR.
#
#   ops/bench/restart_time.sh [GIB (8)] [BUILD_DIR (build)] [WORK_DIR (mktemp)]
set -euo pipefail
gib=${1:-8}
bin=${2:-build}/bin
work=${3:-$(mktemp -d)}
port=${PORT:-50999}
mkdir -p "$work"
server() {  # extra flags...; exec: $! is the server itself
  exec "$bin/kvtier-server" --listen=127.0.0.1:$port --data_dir="$work/data" --ram_bytes=67108864 \
    --disk_bytes=$(((gib + gib / 2 + 1) << 30)) "$@"
}
server > "$work/fill.log" 2>&1 &
pid=$!
until "$bin/kvtierctl" --target=127.0.0.1:$port stats > /dev/null 2>&1; do sleep 0.05; done
head -c $((gib << 30)) /dev/urandom > "$work/blob"
"$bin/kvtierctl" --target=127.0.0.1:$port put-file "$work/blob" --manifest "$work/manifest" > /dev/null
rm -f "$work/blob"
kill -TERM $pid && wait $pid || true
echo "data directory: $(du -sh "$work/data" | cut -f1)"
for verify in false true; do
  t0=$(date +%s.%N)
  server --verify_on_open=$verify > "$work/run-$verify.log" 2>&1 &
  pid=$!
  until "$bin/kvtierctl" --target=127.0.0.1:$port stats > /dev/null 2>&1; do sleep 0.05; done
  echo "verify_on_open=$verify: serving after $(echo "$(date +%s.%N) - $t0" | bc) s"
  if [ $verify = true ]; then
    until grep -q "verified [0-9]* disk pages in" "$work/run-$verify.log"; do sleep 0.2; done
    grep -o "verified [0-9]* disk pages in .*" "$work/run-$verify.log"
  fi
  kill -TERM $pid && wait $pid || true
done
rm -rf "$work/data"
