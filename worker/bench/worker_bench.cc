// Decode-step time versus page budget at 8K-64K contexts on the CPU backend
// (or the GPU with --device=cuda[:N]),
// split into estimate / select / recall / attention, with pages recalled and
// bytes moved per step. Synthetic keys (worker/trace/trace_gen.h: sinks, local
// windows, retrieval heads) in the shape of SmolLM2-135M (9 query heads, 3
// KV heads, head_dim 64), fp16 pages of 32 tokens, one budgeted layer.
//
//   worker_bench --benchmark_filter=DecodeStep [--device=cpu|cuda|cuda:N]
// Arguments: context tokens, budget tokens (0 = full cache).
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "worker/cache/decode_step.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/policy/window_policy.h"
#include "worker/trace/trace_gen.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker {
namespace {

constexpr uint32_t kPage = 32;
constexpr uint32_t kSteps = 64;  // step records cycled through

// --device, checked by main before any benchmark runs.
std::string g_device = "cpu";

struct Setup {
  std::unique_ptr<Policy> policy;
  std::unique_ptr<Device> device;  // outlives the cache and runner below
  InProcessPageStore store;
  std::unique_ptr<PageTransferQueue> queue;
  std::unique_ptr<KvCacheManager> cache;
  std::unique_ptr<DecodeRunner> runner;
  std::vector<TraceStep> steps;
  ~Setup() { cache.reset(); }
};

std::unique_ptr<Setup> Build(uint32_t context, uint32_t budget_tokens) {
  TraceGenOptions g;
  g.n_layers = 1;
  g.n_q_heads = 9;
  g.n_kv_heads = 3;
  g.head_dim = 64;
  g.prompt_len = context;
  g.n_prompt_queries = 1;
  g.decode_steps = kSteps;
  g.n_retrieval_heads = 3;
  g.n_needles = 16;
  auto gen = *TraceGenerator::Create(g);
  auto s = std::make_unique<Setup>();
  absl::StatusOr<std::unique_ptr<Device>> device = CreateDevice(g_device);
  if (!device.ok()) return nullptr;
  s->device = *std::move(device);
  const uint32_t max_pages = (context + 1'000'000) / kPage;
  uint32_t budget = budget_tokens / kPage;
  if (budget_tokens == 0) {
    s->policy = std::make_unique<FullCachePolicy>();
    budget = max_pages;
  } else {
    ArkvaleOptions a;
    a.n_unlimited_layers = 0;
    a.topk_pages = budget / 2;
    s->policy = *ArkvalePolicy::Create(a);
  }
  s->queue = *PageTransferQueue::Create(&s->store, TransferQueueOptions());
  KvCacheOptions o;
  o.layout = PageLayout{.page_size = kPage, .n_kv_heads = 3, .head_dim = 64,
                        .dtype = DType::kF16};
  o.n_layers = 1;
  o.n_q_heads = 9;
  o.pool_pages_per_layer = budget;
  o.max_pages_per_sequence = max_pages;
  o.max_sequences = 1;
  s->cache = *KvCacheManager::Create(o, s->device.get(), s->policy.get(), s->queue.get());
  s->runner = std::make_unique<DecodeRunner>(s->cache.get(), nullptr);
  if (!s->cache->AddSequence(1, {budget}).ok()) return nullptr;
  std::vector<uint32_t> ids(context);
  std::iota(ids.begin(), ids.end(), 0u);
  if (!s->cache->AppendTokenIds(1, ids).ok()) return nullptr;
  TracePromptLayer prompt = gen.PromptLayer(0);
  StepStats ignored;
  if (!s->runner->Prefill(1, 0, prompt.keys.data(), prompt.values.data(), context,
                          prompt.queries.data(), 1, &ignored)
           .ok()) {
    return nullptr;
  }
  for (uint32_t i = 0; i < kSteps; ++i) s->steps.push_back(gen.Step(i, 0));
  return s;
}

void BM_DecodeStep(benchmark::State& state) {
  const uint32_t context = static_cast<uint32_t>(state.range(0));
  const uint32_t budget_tokens = static_cast<uint32_t>(state.range(1));
  std::unique_ptr<Setup> s = Build(context, budget_tokens);
  if (s == nullptr) {
    state.SkipWithError("setup failed");
    return;
  }
  StepStats stats;
  std::vector<float> out(9 * 64);
  uint32_t i = 0;
  uint32_t token = context;
  for (auto _ : state) {
    const TraceStep& step = s->steps[i++ % kSteps];
    if (!s->cache->AppendTokenIds(1, {token++}).ok() ||
        !s->runner
             ->DecodeLayer(1, 0, step.query.data(), step.key.data(), step.value.data(),
                           out.data(), nullptr, &stats)
             .ok()) {
      state.SkipWithError("decode step failed");
      return;
    }
    benchmark::DoNotOptimize(out.data());
  }
  const double n = static_cast<double>(stats.steps);
  auto per_step_us = [&](int64_t ns) {
    return benchmark::Counter(ns / 1e3 / n);
  };
  state.counters["estimate_us"] = per_step_us(stats.times.estimate_ns);
  state.counters["select_us"] = per_step_us(stats.times.select_ns);
  state.counters["recall_us"] = per_step_us(stats.times.recall_ns);
  state.counters["attention_us"] = per_step_us(stats.times.attention_ns);
  state.counters["append_us"] = per_step_us(stats.times.append_ns);
  state.counters["pages_attended"] = benchmark::Counter(stats.pages_attended / n);
  state.counters["pages_recalled"] = benchmark::Counter(stats.pages_recalled / n);
  state.counters["bytes_moved"] = benchmark::Counter(stats.bytes_recalled / n);
}

void Args(benchmark::internal::Benchmark* b) {
  for (int64_t context : {8192, 16384, 32768, 65536}) {
    for (int64_t budget : {0, 1024, 2048, 4096}) b->Args({context, budget});
  }
}

BENCHMARK(BM_DecodeStep)->Apply(Args)->Unit(benchmark::kMicrosecond)->MinTime(0.5);

}  // namespace
}  // namespace kvtier::worker

int main(int argc, char** argv) {
  // --device is ours; the rest goes to the benchmark library.
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], "--device=", 9) == 0) {
      kvtier::worker::g_device = argv[i] + 9;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  if (absl::StatusOr<std::unique_ptr<kvtier::worker::Device>> device =
          kvtier::worker::CreateDevice(kvtier::worker::g_device);
      !device.ok()) {
    std::fprintf(stderr, "worker_bench: %s\n", device.status().ToString().c_str());
    return 1;
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
