#!/usr/bin/env bash
# The GPU checks and benchmarks of kvtier in one call, for a machine with a
# CUDA device, the kvtier binaries on PATH (kernels_cuda_test,
# worker_cuda_test, model_worker_cuda_test, kernels_cuda_bench, worker_bench)
# and python3 with PyTorch:
#
#   ops/bench/gpu_session.sh [OUT_DIR]     (from the checkout's root)
#
# Runs, in order, each step's log under OUT_DIR (default $OUT, else ./gpu-out):
#   1. the CUDA-vs-CPU tests (kernels_cuda_test, worker_cuda_test,
#      model_worker_cuda_test, which reads stories260K from the checkout);
#   2. compute-sanitizer memcheck and racecheck on the decode-attention tests;
#   3. ops/bench/compare_torch_gpu.py (torch SDPA, copies, kernels_cuda_bench);
#   4. worker_bench's Llama-3-8B decode steps on the GPU (8K and 32K, 1/8,
#      batch 1 and 16, pages of 32: the step's phases);
# and prints a summary table last. A failing step is reported and the rest
# still run, so one call gives every answer.
set -uo pipefail
out=${1:-${OUT:-gpu-out}}
mkdir -p "$out"
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
summary=()

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  summary+=("$(printf '%-22s rc=%-3d %4ds  %s' "$name" "$rc" $((SECONDS - start)) \
    "$(grep -aE 'PASSED|FAILED|ERROR SUMMARY|^\| dense' "$out/$name.log" | tail -1)")")
}

# cuBLAS for the model's dense layers (model_worker_cuda_test): where the
# binaries came without it, PyTorch's wheel of it, last in the search path.
cublas_dir=$(python3 -c '
import glob, os, site
for base in site.getsitepackages():
    libs = glob.glob(os.path.join(base, "nvidia", "**", "libcublas.so.*"), recursive=True)
    for lib in sorted(libs):
        print(os.path.dirname(lib)); raise SystemExit
' 2>/dev/null)
[ -n "$cublas_dir" ] && export LD_LIBRARY_PATH="${LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}$cublas_dir"

(nvidia-smi -L || echo "nvidia-smi not found") > "$out/device.txt" 2>&1
step kernels_cuda_test 300 kernels_cuda_test
step worker_cuda_test 300 worker_cuda_test
KVTIER_STORIES260K_DIR=$PWD/worker/model/testdata/stories260K \
  step model_worker_cuda_test 300 model_worker_cuda_test
if command -v compute-sanitizer > /dev/null; then
  step memcheck 300 compute-sanitizer --tool memcheck --error-exitcode 3 kernels_cuda_test \
    --gtest_filter='*DecodeAttention*:*Merge*'
  step racecheck 300 compute-sanitizer --tool racecheck --error-exitcode 3 kernels_cuda_test \
    --gtest_filter='*DecodeAttentionMatchesCpu'
fi
step compare_torch 400 python3 "$here/compare_torch_gpu.py" \
  --bench "$(command -v kernels_cuda_bench)" \
  --json "$out/compare_torch_gpu.json"

if command -v worker_bench > /dev/null; then
  step worker_bench 300 worker_bench --device=cuda \
    --benchmark_filter='DecodeStepLlama/context:(8192|32768)/div:8/batch:(1|16)/page:32' \
    --benchmark_out="$out/worker_bench.json" --benchmark_out_format=json
fi

cat "$out/device.txt"
grep -a '^|' "$out/compare_torch.log" 2>/dev/null
printf '%s\n' "${summary[@]}"
