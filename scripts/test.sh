#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test suite, then checks
# the code the ways the house rules ask:
#   1. Release build with GCC, -Wall -Wextra -Werror, a dropped absl::Status
#      a compile error; every suite (GPU tests skip themselves without a GPU),
#      the Python package's pytest suites among them; then `pip install .`
#      into a fresh virtualenv and the package's suites against that install
#   2. the checked build: Clang, -Wthread-safety -Werror, Debug (asserts on),
#      AddressSanitizer + UndefinedBehaviorSanitizer, every target
#   3. the unit and integration suites again in the checked build
#   4. every fuzz target over its committed corpus, FUZZ_SECONDS (20) each
# and prints how long each step took.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

declare -a step_names=() step_seconds=()
step() {
  local name=$1; shift
  local start=$SECONDS
  log "== $name"
  "$@"
  step_names+=("$name")
  step_seconds+=($((SECONDS - start)))
}
summary() {
  log "step times:"
  for i in "${!step_names[@]}"; do
    awk -v s="${step_seconds[$i]}" -v n="${step_names[$i]}" \
      'BEGIN { printf "  %6.1f min  %s\n", s / 60, n }' >&2
  done
}
trap summary EXIT

run_suites() {
  local dir=$1; shift
  (cd "$dir" && ctest --output-on-failure --timeout 600 -j "$(nproc)" "$@")
}

step "install missing packages" install_debian_packages
step "release build (GCC, -Werror)" build_kvtier
step "Python packages of the chart checks" ensure_chart_tools
step "llama-cpp-python and SmolLM2 for the Python suites" \
  eval 'ensure_llama_cpp_python && fetch_smollm2'
step "every suite, release build" run_suites "$KVTIER_BUILD_DIR"
step "pip install . in a fresh virtualenv, and its suites" check_pip_install
step "checked build (Clang thread-safety, Debug, ASan+UBSan)" build_kvtier_checked
# Sanitizer findings fail the test that hit them; leaks too.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
step "unit and integration suites, checked build" \
  run_suites "$KVTIER_CHECKED_BUILD_DIR" -L 'unit|integration'
step "fuzz targets, ${FUZZ_SECONDS:-20} s each" \
  "$KVTIER_ROOT/fuzz/run.sh" "$KVTIER_CHECKED_BUILD_DIR/fuzz" "$KVTIER_ROOT/fuzz/corpus"
