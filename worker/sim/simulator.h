// Simulator: replays a Q/K/V trace (worker/trace/trace.h, or a synthetic one from
// worker/trace/trace_gen.h) through any policy and budget, next to a full-cache
// reference, and reports how far the attention outputs drift, how many
// pages and bytes moved, and where the decode time went.
//
// Both caches run the same pool dtype and kernels; the reference is the
// full cache, so the error is only the policy's. Token ids are the token
// positions, so page keys follow the usual chain. Offloading policies back
// up into an InProcessPageStore (with optional injected latency).
//
// Not thread-safe; one simulation per call.
#ifndef KVTIER_WORKER_SIM_SIMULATOR_H_
#define KVTIER_WORKER_SIM_SIMULATOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/cache/decode_step.h"
#include "worker/policy/arkv_policy.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/policy/quest_policy.h"
#include "worker/policy/token_policy.h"
#include "worker/trace/trace.h"
#include "worker/trace/trace_gen.h"

namespace kvtier::worker {

// Where the records come from.
class TraceSource {
 public:
  virtual ~TraceSource() = default;
  virtual TraceHeader header() const = 0;
  virtual absl::Status PromptLayer(uint32_t layer, TracePromptLayer* out) const = 0;
  virtual absl::Status Step(uint32_t step, uint32_t layer, TraceStep* out) const = 0;
};

// Over a trace file.
std::unique_ptr<TraceSource> FileTraceSource(TraceReader reader);
// Over a generator (no file).
std::unique_ptr<TraceSource> SyntheticTraceSource(TraceGenerator generator);

struct SimOptions {
  // "full", "sliding_window", "streaming_llm", "h2o", "tova", "arkv",
  // "quest", "quest_per_head" (QuestOptions::per_kv_head) or "arkvale".
  std::string policy = "arkvale";
  uint32_t page_size = 32;
  DType pool_dtype = DType::kF16;
  // KV-head groups with their own page tables, pools and rankings (ArkVale's
  // n_groups): 1 shares one ranking per layer; n_kv_heads gives one per KV
  // head. A group's pages hold only its heads, so its pool, budget and
  // recalls cover that slice. Must divide the trace's n_kv_heads.
  uint32_t n_head_groups = 1;
  // Budget per (layer, head group) in pages. layer_budget_pages, when not
  // empty, gives one per layer (every group of the layer gets it) or one per
  // (layer, group), layer-major, and overrides budget_pages.
  // Quest's budget is its attended-page budget (its cache stays full), or
  // with quest.offload its resident pages (the attended ones); ArkVale's
  // unlimited layers and Quest's dense ones get the whole context.
  uint32_t budget_pages = 64;
  std::vector<uint32_t> layer_budget_pages;
  ArkvaleOptions arkvale;
  QuestOptions quest;
  H2oOptions h2o;
  ArkvOptions arkv;
  // Decode-step options of the policy's run (prefetch).
  DecodeOptions decode;
  // Latency the in-process store adds to every call.
  int64_t store_latency_us = 0;
  // k values of the digest recall measurement (empty: not measured).
  std::vector<uint32_t> recall_ks = {1, 8, 32};
  // Kernel threads (1: the calling thread only; CPU backend).
  int threads = 1;
  // Where both runs' page pools live and their kernels run: "cpu", "cuda"
  // or "cuda:N" (CreateDevice in device.h). The full-cache reference runs
  // on the same device as the policy.
  std::string device = "cpu";

  absl::Status Validate() const;
};

struct SimReport {
  std::string policy;
  uint32_t n_layers = 0;
  uint32_t n_head_groups = 1;
  uint32_t steps = 0;
  uint32_t context_tokens = 0;  // prompt + decode
  // Relative L2 error of each (step, layer) output against the full cache:
  // ||o - o_ref|| / ||o_ref||, over all query heads.
  double mean_rel_error = 0;
  double max_rel_error = 0;
  StepStats stats;           // the policy's decode steps, all layers
  StepStats prefill_stats;   // the policy's prefill (recalls of its final plan)
  StepStats reference_stats; // the full cache's run
  CacheCounters counters;
  uint32_t max_pages_in_use = 0;  // over (layer, group) pools, the high water
  // Digest recall accuracy (digest_recall.h) of the policy's digest kind on
  // the full cache, averaged over steps and layers, for k = recall_ks[i].
  std::vector<uint32_t> recall_ks;
  std::vector<double> digest_recall;
};

// Per-layer page budgets from a budget allocator's profile file
// (worker/budget/profile.h) for a total of `total_pages` over all layers.
//   kind "xkv":  XKV over a profile from kvtier-profile, in pages
//                (tokens_per_unit = page_size), at least min_pages per layer.
//   kind "lukv": LU-KV over a table; its per-(layer, KV head) token budgets
//                are summed per layer and rounded up to pages ([interp] a page
//                holds every KV head, so heads of a layer share a page count),
//                then raised to min_pages.
//   kind "uniform": total_pages spread evenly.
// With n_groups > 1 the result has one budget per (layer, group),
// layer-major: LU-KV's per-head budgets are summed per group; the others
// give every group of a layer the layer's budget. total_pages then counts
// the pages of one group per layer (a group's page holds only its heads).
struct AllocatorChoice {
  std::string kind = "uniform";
  std::string path;
  uint32_t total_pages = 0;
  uint32_t min_pages = 1;
};
absl::StatusOr<std::vector<uint32_t>> AllocateLayerBudgets(const AllocatorChoice& choice,
                                                           uint32_t n_layers, uint32_t n_kv_heads,
                                                           uint32_t context_tokens,
                                                           uint32_t page_size,
                                                           uint32_t n_groups = 1);

absl::StatusOr<SimReport> RunSimulation(const TraceSource& source, const SimOptions& options);

// One line per figure, for logs and the CLI.
std::string FormatReport(const SimReport& report);

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_SIM_SIMULATOR_H_
