// Prompt attention on the CPU (DenseCausalAttention, which both a whole
// prefill and the rest of a prompt after a reused prefix run): time per
// layer for `rows` queries after `past` cached positions, in the shape of
// SmolLM2-135M (9 query heads, 3 KV heads, head_dim 64). Random inputs.
// FLOP/s counts the causal multiply-adds (q.k and p.v, 4 * head_dim per
// query head and visible position); BM_SquareSgemm, the same BLAS on a
// 1024^3 product in the same run, is the host's reachable rate.
//
//   worker_prefill_bench
// Arguments: past positions, query rows (BM_SquareSgemm: the side).
#include <cblas.h>

#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "worker/model/blas_kernels.h"
#include "worker/model/dense_attention_backend.h"

namespace kvtier::model {
namespace {

void BM_PrefillAttention(benchmark::State& state) {
  const int past = static_cast<int>(state.range(0));
  const int rows = static_cast<int>(state.range(1));
  const AttentionShape shape{.n_layers = 1, .n_heads = 9, .n_kv_heads = 3, .head_dim = 64,
                             .max_positions = past + rows};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  auto fill = [&](size_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(rng);
    return v;
  };
  const std::vector<float> q = fill(static_cast<size_t>(rows) * shape.q_dim());
  const std::vector<float> k = fill(static_cast<size_t>(past + rows) * shape.kv_dim());
  const std::vector<float> v = fill(k.size());
  std::vector<float> out(q.size());
  for (auto _ : state) {
    DenseCausalAttention(shape, q.data(), rows, k.data(), v.data(), past, out.data());
    benchmark::DoNotOptimize(out.data());
  }
  double flops = 0;
  for (int i = 0; i < rows; ++i) flops += 4.0 * shape.head_dim * shape.n_heads * (past + i + 1);
  state.counters["rows/s"] = benchmark::Counter(static_cast<double>(rows) * state.iterations(),
                                                benchmark::Counter::kIsRate);
  state.counters["FLOP/s"] =
      benchmark::Counter(flops * state.iterations(), benchmark::Counter::kIsRate);
}

void BM_SquareSgemm(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  std::vector<float> a(static_cast<size_t>(n) * n, 0.5f), b(a.size(), 0.25f), c(a.size());
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1.0f, a.data(), n, b.data(), n,
                0.0f, c.data(), n);
    benchmark::DoNotOptimize(c.data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * n * n * n * state.iterations(),
                                                benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SquareSgemm)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();
// The rest of a prompt after a reused 8K prefix (one or two row blocks), and
// whole-prefill blocks at 1K-8K.
BENCHMARK(BM_PrefillAttention)
    ->Args({8016, 11})
    ->Args({8016, 27})
    ->Args({8000, 64})
    ->Args({1024, 64})
    ->Args({4096, 64})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace kvtier::model

int main(int argc, char** argv) {
  // The BLAS kernels the model's programs run (blas_kernels.h).
  kvtier::model::UseCpuBlasKernels("worker_prefill_bench", argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
