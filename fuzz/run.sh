#!/usr/bin/env bash
# Runs every fuzz target of a KVTIER_FUZZ build for a while over its
# committed corpus (read only: new inputs go to a temporary directory),
# several targets at once, and fails if any target finds a crash, a leak,
# a sanitizer report or a timeout. Prints each target's executions.
#
#   fuzz/run.sh BUILD_DIR/fuzz CORPUS_DIR      # FUZZ_SECONDS per target (20)
#   FUZZ_SECONDS=3600 fuzz/run.sh ...          # a long run
#
# Crashing inputs are kept in $FUZZ_ARTIFACTS (default: a temporary
# directory, printed); replay one with `BUILD_DIR/fuzz/<target> <file>`.
set -uo pipefail
bin_dir=$1
corpus_dir=$2
seconds=${FUZZ_SECONDS:-20}
jobs=${FUZZ_JOBS:-$(nproc)}
work=$(mktemp -d)
artifacts=${FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$artifacts"
trap 'rm -rf "$work/corpora"' EXIT

run_one() {
  local target=$1
  local name=$(basename "$target")
  local fresh="$work/corpora/$name"
  mkdir -p "$fresh"
  "$target" -max_total_time="$seconds" -timeout=20 -rss_limit_mb=3072 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
    "$fresh" "$corpus_dir/$name" > "$work/$name.log" 2>&1
  local rc=$?
  local runs=$(grep -m1 'stat::number_of_executed_units' "$work/$name.log" | awk '{print $2}')
  if [ $rc -eq 0 ]; then
    printf '%-16s ok    %10s executions in %ss\n' "$name" "${runs:-?}" "$seconds"
  else
    printf '%-16s FAIL  (exit %d) after %s executions; log:\n' "$name" "$rc" "${runs:-?}"
    tail -40 "$work/$name.log"
  fi
  return $rc
}
export -f run_one
export work seconds corpus_dir artifacts
# UCX catches SIGSEGV, SIGILL and friends to print its own backtrace, which
# would keep libFuzzer from saving the input that crashed.
export UCX_ERROR_SIGNALS=""
export LSAN_OPTIONS="suppressions=$(cd "$(dirname "$0")" && pwd)/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

targets=$(ls "$bin_dir"/*_fuzz 2>/dev/null)
[ -n "$targets" ] || { echo "no fuzz targets in $bin_dir"; exit 1; }
failed=0
printf '%s\n' $targets | xargs -P "$jobs" -I{} bash -c 'run_one {}' || failed=1
if [ $failed -ne 0 ]; then
  echo "fuzzing found a failure; inputs in $artifacts"
  exit 1
fi
