// Decode-step time versus page budget on the CPU backend (or the GPU with
// --device=cuda[:N]), split into estimate / select / recall / attention,
// with pages recalled and bytes moved per step. Synthetic keys
// (worker/trace/trace_gen.h: sinks, local windows, retrieval heads), one
// budgeted layer, ArkVale:
//   BM_DecodeStep: SmolLM2-135M's shape (9 query heads, 3 KV heads,
//     head_dim 64), fp16 pages of 32, 8K-64K contexts; args: context tokens,
//     budget tokens (0 = full cache).
//   BM_DecodeStepLlama: a Llama-3-8B layer, 8K-128K, budgets 1/4-1/16,
//     batch 1 and 16, pages of 16 and 32 (args named).
//
//   worker_bench --benchmark_filter=DecodeStep [--device=cpu|cuda|cuda:N]
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

// The attention shape of the layer a bench decodes.
struct LayerShape {
  uint32_t n_q_heads, n_kv_heads, head_dim;
};
constexpr LayerShape kSmolLm2{9, 3, 64};
constexpr LayerShape kLlama3_8B{32, 8, 128};

// `batch` sequences of `context` prompt tokens (the same synthetic prompt)
// under ArkVale at `budget_tokens` a sequence (0: the full cache), pages
// of `page_size` fp16 tokens, one layer.
std::unique_ptr<Setup> Build(uint32_t context, uint32_t budget_tokens, LayerShape shape = kSmolLm2,
                             uint32_t page_size = kPage, uint32_t batch = 1) {
  TraceGenOptions g;
  g.n_layers = 1;
  g.n_q_heads = shape.n_q_heads;
  g.n_kv_heads = shape.n_kv_heads;
  g.head_dim = shape.head_dim;
  g.prompt_len = context;
  g.n_prompt_queries = 1;
  g.decode_steps = kSteps;
  g.n_retrieval_heads = shape.n_kv_heads;
  g.n_needles = 16;
  auto gen = *TraceGenerator::Create(g);
  auto s = std::make_unique<Setup>();
  absl::StatusOr<std::unique_ptr<Device>> device = CreateDevice(g_device);
  if (!device.ok()) return nullptr;
  s->device = *std::move(device);
  const uint32_t max_pages = (context + 1'000'000) / page_size;
  uint32_t budget = budget_tokens / page_size;
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
  o.layout = PageLayout{.page_size = page_size, .n_kv_heads = shape.n_kv_heads,
                        .head_dim = shape.head_dim, .dtype = DType::kF16};
  o.n_layers = 1;
  o.n_q_heads = shape.n_q_heads;
  o.pool_pages_per_layer = budget * batch;
  o.max_pages_per_sequence = max_pages;
  o.max_sequences = batch;
  s->cache = *KvCacheManager::Create(o, s->device.get(), s->policy.get(), s->queue.get());
  s->runner = std::make_unique<DecodeRunner>(s->cache.get(), nullptr);
  std::vector<uint32_t> ids(context);
  std::iota(ids.begin(), ids.end(), 0u);
  TracePromptLayer prompt = gen.PromptLayer(0);
  StepStats ignored;
  for (uint64_t seq = 1; seq <= batch; ++seq) {
    if (!s->cache->AddSequence(seq, {budget}).ok() || !s->cache->AppendTokenIds(seq, ids).ok() ||
        !s->runner
             ->Prefill(seq, 0, prompt.keys.data(), prompt.values.data(), context,
                       prompt.queries.data(), 1, &ignored)
             .ok()) {
      return nullptr;
    }
  }
  for (uint32_t i = 0; i < kSteps; ++i) s->steps.push_back(gen.Step(i, 0));
  return s;
}

// One step of every sequence per iteration; counters are per such step.
void RunSteps(benchmark::State& state, Setup& s, LayerShape shape, uint32_t context,
              uint32_t batch) {
  StepStats stats;
  std::vector<float> out(size_t{shape.n_q_heads} * shape.head_dim);
  uint32_t i = 0;
  uint32_t token = context;
  for (auto _ : state) {
    const TraceStep& step = s.steps[i++ % kSteps];
    for (uint64_t seq = 1; seq <= batch; ++seq) {
      if (!s.cache->AppendTokenIds(seq, {token}).ok() ||
          !s.runner
               ->DecodeLayer(seq, 0, step.query.data(), step.key.data(), step.value.data(),
                             out.data(), nullptr, &stats)
               .ok()) {
        state.SkipWithError("decode step failed");
        return;
      }
    }
    ++token;
    benchmark::DoNotOptimize(out.data());
  }
  const double n = static_cast<double>(stats.steps) / batch;
  auto per_step_us = [&](int64_t ns) { return benchmark::Counter(ns / 1e3 / n); };
  state.counters["estimate_us"] = per_step_us(stats.times.estimate_ns);
  state.counters["select_us"] = per_step_us(stats.times.select_ns);
  state.counters["recall_us"] = per_step_us(stats.times.recall_ns);
  state.counters["attention_us"] = per_step_us(stats.times.attention_ns);
  state.counters["append_us"] = per_step_us(stats.times.append_ns);
  state.counters["pages_attended"] = benchmark::Counter(stats.pages_attended / n);
  state.counters["pages_recalled"] = benchmark::Counter(stats.pages_recalled / n);
  state.counters["bytes_moved"] = benchmark::Counter(stats.bytes_recalled / n);
}

void BM_DecodeStep(benchmark::State& state) {
  const uint32_t context = static_cast<uint32_t>(state.range(0));
  const uint32_t budget_tokens = static_cast<uint32_t>(state.range(1));
  std::unique_ptr<Setup> s = Build(context, budget_tokens);
  if (s == nullptr) {
    state.SkipWithError("setup failed");
    return;
  }
  RunSteps(state, *s, kSmolLm2, context, 1);
}

// A Llama-3-8B layer (32 query heads, 8 KV heads, head_dim 128, fp16
// pages). Args: context, budget divisor (budget = context / div), batch
// (sequences stepped in turn), page size.
void BM_DecodeStepLlama(benchmark::State& state) {
  const auto context = static_cast<uint32_t>(state.range(0));
  const auto div = static_cast<uint32_t>(state.range(1));
  const auto batch = static_cast<uint32_t>(state.range(2));
  const auto page_size = static_cast<uint32_t>(state.range(3));
  std::unique_ptr<Setup> s = Build(context, context / div, kLlama3_8B, page_size, batch);
  if (s == nullptr) {
    state.SkipWithError("setup failed");
    return;
  }
  RunSteps(state, *s, kLlama3_8B, context, batch);
}
BENCHMARK(BM_DecodeStepLlama)
    ->ArgNames({"context", "div", "batch", "page"})
    ->ArgsProduct({{8192, 32768, 131072}, {4, 8, 16}, {1, 16}, {16, 32}})
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(0.5);

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
