// kvtier-sim: replays a Q/K/V trace through a policy and budget and prints
// the attention error against the full cache, the pages and bytes moved and
// the time per decode phase.
//
//   kvtier-sim --trace=run.kvtrace --policy=arkvale --budget_pages=64
//   kvtier-sim --synthetic --prompt_len=8192 --steps=32 --policy=quest
#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/tool_usage.h"
#include "worker/sim/simulator.h"

ABSL_FLAG(std::string, trace, "", "trace file (worker/trace/trace.h); empty with --synthetic");
ABSL_FLAG(bool, synthetic, false, "generate the trace in memory (worker/trace/trace_gen.h)");
ABSL_FLAG(std::string, policy, "arkvale",
          "full, sliding_window, streaming_llm, h2o, tova, arkv, quest or arkvale");
ABSL_FLAG(uint32_t, page_size, 32, "tokens per page");
ABSL_FLAG(std::string, dtype, "f16", "pool dtype: f32, f16 or bf16");
ABSL_FLAG(uint32_t, budget_pages, 64,
          "pages per layer (Quest: pages attended, and with --quest_offload the pages it holds)");
ABSL_FLAG(std::string, layer_budgets, "", "comma-separated pages per layer (overrides)");
ABSL_FLAG(std::string, allocator, "",
          "per-layer budgets from an allocator: uniform, xkv or lukv (with --profile and "
          "--total_pages); overrides --budget_pages");
ABSL_FLAG(std::string, profile, "", "XKV profile or LU-KV table file for --allocator");
ABSL_FLAG(uint32_t, total_pages, 0, "pages over all layers for --allocator");
ABSL_FLAG(uint32_t, topk_pages, 32, "ArkVale top-k (0: budget/2)");
ABSL_FLAG(uint32_t, sink_pages, 1, "ArkVale sink pages");
ABSL_FLAG(uint32_t, win_pages, 2, "ArkVale window pages");
ABSL_FLAG(uint32_t, dense_layers, 2, "ArkVale unlimited / Quest dense layers");
ABSL_FLAG(bool, quest_offload, false,
          "Quest holds only the pages it attends and recalls the rest (QuestOptions::offload)");
ABSL_FLAG(uint32_t, head_groups, 1,
          "KV-head groups with their own pools and rankings (1 .. n_kv_heads)");
ABSL_FLAG(bool, prefetch, false, "prefetch the next layer's pages with the current query");
ABSL_FLAG(int64_t, store_latency_us, 0, "latency added to every store call");
ABSL_FLAG(int, threads, 1, "kernel threads");
ABSL_FLAG(std::string, device, "cpu",
          "where the page pools live and kernels run: cpu, cuda or cuda:N");
// Synthetic trace shape.
ABSL_FLAG(uint32_t, layers, 4, "synthetic: layers");
ABSL_FLAG(uint32_t, q_heads, 8, "synthetic: query heads");
ABSL_FLAG(uint32_t, kv_heads, 2, "synthetic: KV heads");
ABSL_FLAG(uint32_t, head_dim, 64, "synthetic: head dim");
ABSL_FLAG(uint32_t, prompt_len, 4096, "synthetic: prompt tokens");
ABSL_FLAG(uint32_t, steps, 16, "synthetic: decode steps");
ABSL_FLAG(uint64_t, seed, 1, "synthetic: seed");

namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "kvtier-sim: %s\n", status.ToString().c_str());
  return 1;
}

// Options from the flags; INVALID_ARGUMENT for a malformed one.
absl::StatusOr<kvtier::worker::SimOptions> OptionsFromFlags() {
  using kvtier::DType;
  kvtier::worker::SimOptions o;
  o.policy = absl::GetFlag(FLAGS_policy);
  o.page_size = absl::GetFlag(FLAGS_page_size);
  const std::string dtype = absl::GetFlag(FLAGS_dtype);
  if (dtype == "f32") {
    o.pool_dtype = DType::kF32;
  } else if (dtype == "f16") {
    o.pool_dtype = DType::kF16;
  } else if (dtype == "bf16") {
    o.pool_dtype = DType::kBF16;
  } else {
    return absl::InvalidArgumentError("--dtype must be f32, f16 or bf16");
  }
  o.budget_pages = absl::GetFlag(FLAGS_budget_pages);
  for (absl::string_view part : absl::StrSplit(absl::GetFlag(FLAGS_layer_budgets), ',',
                                               absl::SkipEmpty())) {
    uint32_t b = 0;
    if (!absl::SimpleAtoi(part, &b)) {
      return absl::InvalidArgumentError("--layer_budgets must be numbers");
    }
    o.layer_budget_pages.push_back(b);
  }
  o.arkvale.topk_pages = absl::GetFlag(FLAGS_topk_pages);
  o.arkvale.n_sink_pages = absl::GetFlag(FLAGS_sink_pages);
  o.arkvale.n_win_pages = absl::GetFlag(FLAGS_win_pages);
  o.arkvale.n_unlimited_layers = absl::GetFlag(FLAGS_dense_layers);
  o.quest.n_dense_layers = absl::GetFlag(FLAGS_dense_layers);
  o.quest.offload = absl::GetFlag(FLAGS_quest_offload);
  o.store_latency_us = absl::GetFlag(FLAGS_store_latency_us);
  o.decode.prefetch_next_layer = absl::GetFlag(FLAGS_prefetch);
  o.n_head_groups = absl::GetFlag(FLAGS_head_groups);
  o.threads = absl::GetFlag(FLAGS_threads);
  o.device = absl::GetFlag(FLAGS_device);
  return o;
}

// The trace file, or a generator with the synthetic flags.
absl::StatusOr<std::unique_ptr<kvtier::worker::TraceSource>> SourceFromFlags() {
  using namespace kvtier;
  if (!absl::GetFlag(FLAGS_synthetic)) {
    absl::StatusOr<TraceReader> reader = TraceReader::Open(absl::GetFlag(FLAGS_trace));
    if (!reader.ok()) return reader.status();
    return worker::FileTraceSource(*std::move(reader));
  }
  TraceGenOptions g;
  g.n_layers = absl::GetFlag(FLAGS_layers);
  g.n_q_heads = absl::GetFlag(FLAGS_q_heads);
  g.n_kv_heads = absl::GetFlag(FLAGS_kv_heads);
  g.head_dim = absl::GetFlag(FLAGS_head_dim);
  g.prompt_len = absl::GetFlag(FLAGS_prompt_len);
  g.decode_steps = absl::GetFlag(FLAGS_steps);
  g.seed = absl::GetFlag(FLAGS_seed);
  g.needle_margin = std::min<uint32_t>(g.needle_margin, g.prompt_len / 4);
  absl::StatusOr<TraceGenerator> gen = TraceGenerator::Create(g);
  if (!gen.ok()) return gen.status();
  return worker::SyntheticTraceSource(*std::move(gen));
}

}  // namespace

int main(int argc, char** argv) {
  kvtier::SetToolUsage(
      "kvtier-sim --trace=PATH | --synthetic [--policy=P] [--budget_pages=N] [flags]");
  absl::ParseCommandLine(argc, argv);
  using namespace kvtier::worker;
  absl::StatusOr<SimOptions> options = OptionsFromFlags();
  if (!options.ok()) return Fail(options.status());
  SimOptions& o = *options;
  absl::StatusOr<std::unique_ptr<TraceSource>> source = SourceFromFlags();
  if (!source.ok()) return Fail(source.status());
  if (!absl::GetFlag(FLAGS_allocator).empty()) {
    const kvtier::TraceHeader h = (*source)->header();
    AllocatorChoice choice;
    choice.kind = absl::GetFlag(FLAGS_allocator);
    choice.path = absl::GetFlag(FLAGS_profile);
    choice.total_pages = absl::GetFlag(FLAGS_total_pages);
    // ArkVale needs top-k below every budget.
    choice.min_pages = o.policy == "arkvale" ? o.arkvale.topk_pages + 1 : 2;
    absl::StatusOr<std::vector<uint32_t>> budgets = AllocateLayerBudgets(
        choice, h.n_layers, h.n_kv_heads, h.prompt_len + h.decode_steps, o.page_size,
        o.n_head_groups);
    if (!budgets.ok()) return Fail(budgets.status());
    o.layer_budget_pages = *budgets;
    std::string line = "budgets per (layer, head group) (pages):";
    for (uint32_t b : *budgets) absl::StrAppend(&line, " ", b);
    std::puts(line.c_str());
  }
  absl::StatusOr<SimReport> report = RunSimulation(**source, o);
  if (!report.ok()) return Fail(report.status());
  std::fputs(FormatReport(*report).c_str(), stdout);
  return 0;
}
