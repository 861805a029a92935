// Costs of the allocation pipeline at model scale: XKV greedy, LU-KV table
// construction and online lookup, trace record reads.
//
//   build-alloc/worker/worker_alloc_bench
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "worker/budget/lukv_allocator.h"
#include "worker/budget/xkv_allocator.h"
#include "worker/trace/trace_gen.h"

namespace kvtier {
namespace {

XkvProfile RandomXkv(int layers, int length) {
  std::mt19937 rng(1);
  std::exponential_distribution<double> score(1.0);
  XkvProfile p;
  p.n_layers = layers;
  p.samples.resize(1);
  for (int l = 0; l < layers; ++l) {
    std::vector<double> inc(length);
    for (double& v : inc) v = score(rng) * (1 + l);
    std::sort(inc.begin(), inc.end(), std::greater<double>());
    p.samples[0].push_back(std::move(inc));
  }
  return p;
}

LukvProfile RandomLukv(int layers, int heads, int length) {
  std::mt19937 rng(2);
  std::exponential_distribution<double> util(1.0);
  LukvProfile p;
  p.n_layers = layers;
  p.n_kv_heads = heads;
  p.samples.resize(1);
  for (int u = 0; u < layers * heads; ++u) {
    LukvCurve c;
    c.length = length;
    c.protected_tokens = 36;
    c.loss.assign(1, 0.0);
    for (int j = 36; j < length; ++j)
      c.loss.push_back(c.loss.back() + util(rng));
    p.samples[0].push_back(std::move(c));
  }
  return p;
}

// args: layers, tokens per layer curve; allocates 1/8 of the context.
void BM_XkvAllocate(benchmark::State& state) {
  const int layers = static_cast<int>(state.range(0));
  const int length = static_cast<int>(state.range(1));
  auto xkv = XkvAllocator::Create(RandomXkv(layers, length));
  const BudgetRequest r{.n_layers = layers,
                        .n_kv_heads = 8,
                        .total = int64_t{layers} * length / 8};
  for (auto _ : state) {
    auto a = xkv->Allocate(r);
    benchmark::DoNotOptimize(a);
  }
  state.counters["units"] = static_cast<double>(r.total);
}
BENCHMARK(BM_XkvAllocate)
    ->Args({32, 8192})
    ->Args({32, 65536})
    ->Unit(benchmark::kMillisecond);

// args: layers, kv heads, tokens per head.
void BM_LukvBuildTable(benchmark::State& state) {
  const LukvProfile p = RandomLukv(static_cast<int>(state.range(0)),
                                   static_cast<int>(state.range(1)),
                                   static_cast<int>(state.range(2)));
  for (auto _ : state) {
    auto t = BuildLukvTable(p);
    benchmark::DoNotOptimize(t);
  }
}
BENCHMARK(BM_LukvBuildTable)
    ->Args({32, 8, 8192})
    ->Args({32, 8, 65536})
    ->Unit(benchmark::kMillisecond);

void BM_LukvAllocate(benchmark::State& state) {
  auto lukv = LukvAllocator::Create(*BuildLukvTable(RandomLukv(32, 8, 4096)));
  const BudgetRequest r{
      .n_layers = 32, .n_kv_heads = 8, .total = 32 * 8 * 512, .context = 4096};
  for (auto _ : state) {
    auto a = lukv->Allocate(r);
    benchmark::DoNotOptimize(a);
  }
}
BENCHMARK(BM_LukvAllocate)->Unit(benchmark::kMicrosecond);

// Reading one layer's prompt record of an 8K f32 trace (8/2 heads, d 64).
void BM_TraceReadPromptLayer(benchmark::State& state) {
  TraceGenOptions o;
  o.n_layers = 2;
  o.prompt_len = static_cast<uint32_t>(state.range(0));
  o.decode_steps = 4;
  const std::string path =
      "/tmp/kvtier_bench_trace." + std::to_string(getpid());
  if (!GenerateTraceFile(o, path).ok()) {
    state.SkipWithError("trace generation failed");
    return;
  }
  auto reader = TraceReader::Open(path);
  TracePromptLayer rec;
  for (auto _ : state) {
    if (!reader->ReadPromptLayer(1, &rec).ok()) state.SkipWithError("read");
  }
  state.SetBytesProcessed(state.iterations() *
                          reader->header().PromptRecordBytes());
  std::remove(path.c_str());
}
BENCHMARK(BM_TraceReadPromptLayer)->Arg(8192)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace kvtier

BENCHMARK_MAIN();
