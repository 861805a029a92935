#include "worker/sim/simulator.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "worker/budget/allocator.h"
#include "worker/budget/lukv_allocator.h"
#include "worker/budget/profile.h"
#include "worker/budget/xkv_allocator.h"
#include "worker/policy/window_policy.h"
#include "worker/sim/digest_recall.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker {
namespace {

class FileSource : public TraceSource {
 public:
  explicit FileSource(TraceReader reader) : reader_(std::move(reader)) {}
  TraceHeader header() const override { return reader_.header(); }
  absl::Status PromptLayer(uint32_t layer, TracePromptLayer* out) const override {
    return reader_.ReadPromptLayer(layer, out);
  }
  absl::Status Step(uint32_t step, uint32_t layer, TraceStep* out) const override {
    return reader_.ReadStep(step, layer, out);
  }

 private:
  TraceReader reader_;
};

class GeneratorSource : public TraceSource {
 public:
  explicit GeneratorSource(TraceGenerator gen) : gen_(std::move(gen)) {}
  TraceHeader header() const override { return gen_.header(); }
  absl::Status PromptLayer(uint32_t layer, TracePromptLayer* out) const override {
    *out = gen_.PromptLayer(layer);
    return absl::OkStatus();
  }
  absl::Status Step(uint32_t step, uint32_t layer, TraceStep* out) const override {
    *out = gen_.Step(step, layer);
    return absl::OkStatus();
  }

 private:
  TraceGenerator gen_;
};

// Policies see one "layer" per (layer, head group), layer-major, so the
// layer counts of their dense-layer options scale with the groups.
absl::StatusOr<std::unique_ptr<Policy>> MakePolicy(const SimOptions& o) {
  const uint32_t g = o.n_head_groups;
  if (o.policy == "full") return std::unique_ptr<Policy>(new FullCachePolicy());
  if (o.policy == "sliding_window") {
    return std::unique_ptr<Policy>(new WindowPolicy(WindowOptions{.n_sink_pages = 0}));
  }
  if (o.policy == "streaming_llm") {
    return std::unique_ptr<Policy>(new WindowPolicy(WindowOptions{.n_sink_pages = 1}));
  }
  if (o.policy == "h2o") {
    ASSIGN_OR_RETURN(auto p, H2oPolicy::Create(o.h2o));
    return std::unique_ptr<Policy>(std::move(p));
  }
  if (o.policy == "tova") return std::unique_ptr<Policy>(new TovaPolicy());
  if (o.policy == "arkv") {
    ASSIGN_OR_RETURN(auto p, ArkvPolicy::Create(o.arkv));
    return std::unique_ptr<Policy>(std::move(p));
  }
  if (o.policy == "quest" || o.policy == "quest_per_head") {
    QuestOptions q = o.quest;
    q.per_kv_head = q.per_kv_head || o.policy == "quest_per_head";
    q.page_budget = o.budget_pages;
    q.n_dense_layers *= g;
    ASSIGN_OR_RETURN(auto p, QuestPolicy::Create(q));
    return std::unique_ptr<Policy>(std::move(p));
  }
  if (o.policy == "arkvale") {
    ArkvaleOptions a = o.arkvale;
    a.n_unlimited_layers *= g;
    ASSIGN_OR_RETURN(auto p, ArkvalePolicy::Create(a));
    return std::unique_ptr<Policy>(std::move(p));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown policy '", o.policy, "'"));
}

// One cache with its store, queue and runner.
struct Lane {
  std::unique_ptr<Policy> policy;
  std::unique_ptr<Device> device;  // outlives the cache and runner below
  InProcessPageStore store;
  std::unique_ptr<PageTransferQueue> queue;
  std::unique_ptr<KvCacheManager> cache;
  std::unique_ptr<DecodeRunner> runner;
  StepStats prefill_stats;
  StepStats stats;

  ~Lane() { cache.reset(); }
};

absl::Status SetUpLane(Lane& lane, std::unique_ptr<Policy> policy, const TraceHeader& h,
                       const SimOptions& o, const std::vector<uint32_t>& budgets,
                       kernels::ThreadPool* threads, DecodeOptions decode) {
  lane.policy = std::move(policy);
  ASSIGN_OR_RETURN(lane.device, CreateDevice(o.device));
  lane.store.SetLatencyMicros(o.store_latency_us);
  ASSIGN_OR_RETURN(lane.queue, PageTransferQueue::Create(&lane.store, TransferQueueOptions()));
  KvCacheOptions co;
  co.layout = PageLayout{.page_size = o.page_size, .n_kv_heads = h.n_kv_heads,
                         .head_dim = h.head_dim, .dtype = o.pool_dtype};
  co.n_layers = h.n_layers;
  co.n_q_heads = h.n_q_heads;
  co.pool_pages_per_layer = *std::max_element(budgets.begin(), budgets.end());
  co.max_pages_per_sequence = (h.prompt_len + h.decode_steps) / o.page_size + 1;
  co.max_sequences = 1;
  ASSIGN_OR_RETURN(lane.cache, KvCacheManager::Create(co, lane.device.get(), lane.policy.get(),
                                                      lane.queue.get()));
  lane.runner = std::make_unique<DecodeRunner>(lane.cache.get(), threads, decode);
  RETURN_IF_ERROR(lane.cache->AddSequence(1, budgets));
  std::vector<uint32_t> ids(h.prompt_len);
  std::iota(ids.begin(), ids.end(), 0u);
  return lane.cache->AppendTokenIds(1, ids);
}

double RelError(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    num += double(out[i] - ref[i]) * (out[i] - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

// Heads [first, first + count) of rows laid out [rows][heads][d].
std::vector<float> SliceHeads(const float* src, size_t rows, uint32_t heads, uint32_t d,
                              uint32_t first, uint32_t count) {
  std::vector<float> out(rows * count * d);
  for (size_t r = 0; r < rows; ++r) {
    std::copy_n(src + (r * heads + first) * d, size_t{count} * d, &out[(r * count) * d]);
  }
  return out;
}

}  // namespace

std::unique_ptr<TraceSource> FileTraceSource(TraceReader reader) {
  return std::make_unique<FileSource>(std::move(reader));
}

std::unique_ptr<TraceSource> SyntheticTraceSource(TraceGenerator generator) {
  return std::make_unique<GeneratorSource>(std::move(generator));
}

absl::Status SimOptions::Validate() const {
  if (page_size == 0 || page_size > PageLayout::kMaxPageSize) {
    return absl::InvalidArgumentError(absl::StrCat("page_size ", page_size, " out of range"));
  }
  if (budget_pages == 0) return absl::InvalidArgumentError("budget_pages must be positive");
  for (uint32_t b : layer_budget_pages) {
    if (b == 0) return absl::InvalidArgumentError("a layer budget is 0 pages");
  }
  if (store_latency_us < 0) return absl::InvalidArgumentError("negative store latency");
  if (threads < 1) return absl::InvalidArgumentError("threads must be >= 1");
  if (n_head_groups < 1) return absl::InvalidArgumentError("n_head_groups must be >= 1");
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint32_t>> AllocateLayerBudgets(const AllocatorChoice& choice,
                                                           uint32_t n_layers, uint32_t n_kv_heads,
                                                           uint32_t context_tokens,
                                                           uint32_t page_size,
                                                           uint32_t n_groups) {
  if (n_groups == 0 || n_kv_heads % n_groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat(n_groups, " head groups do not divide ",
                                                   n_kv_heads, " KV heads"));
  }
  const uint32_t heads_per_group = n_kv_heads / n_groups;
  if (choice.total_pages < n_layers * choice.min_pages) {
    return absl::InvalidArgumentError(absl::StrCat("total of ", choice.total_pages,
                                                   " pages is below ", choice.min_pages,
                                                   " per layer"));
  }
  BudgetAllocation allocation;
  std::vector<uint32_t> pages(n_layers * n_groups);
  if (choice.kind == "uniform") {
    UniformAllocator uniform;
    ASSIGN_OR_RETURN(allocation, uniform.Allocate({.n_layers = int32_t(n_layers),
                                                   .n_kv_heads = int32_t(n_kv_heads),
                                                   .total = choice.total_pages}));
    for (uint32_t u = 0; u < pages.size(); ++u) {
      pages[u] = uint32_t(allocation.LayerBudget(u / n_groups));
    }
  } else if (choice.kind == "xkv") {
    ASSIGN_OR_RETURN(XkvProfile profile, ReadXkvProfile(choice.path));
    ASSIGN_OR_RETURN(XkvAllocator xkv,
                     XkvAllocator::Create(profile, XkvOptions{.tokens_per_unit = page_size,
                                                              .min_per_layer = choice.min_pages}));
    ASSIGN_OR_RETURN(allocation, xkv.Allocate({.n_layers = int32_t(n_layers),
                                               .n_kv_heads = int32_t(n_kv_heads),
                                               .total = choice.total_pages}));
    for (uint32_t u = 0; u < pages.size(); ++u) {
      pages[u] = uint32_t(allocation.LayerBudget(u / n_groups));
    }
  } else if (choice.kind == "lukv") {
    ASSIGN_OR_RETURN(LukvTable table, ReadLukvTable(choice.path));
    ASSIGN_OR_RETURN(LukvAllocator lukv, LukvAllocator::Create(std::move(table)));
    const int64_t total_tokens = int64_t{choice.total_pages} * page_size * n_kv_heads;
    ASSIGN_OR_RETURN(allocation, lukv.Allocate({.n_layers = int32_t(n_layers),
                                                .n_kv_heads = int32_t(n_kv_heads),
                                                .total = total_tokens,
                                                .context = context_tokens}));
    for (uint32_t u = 0; u < pages.size(); ++u) {
      const int32_t layer = static_cast<int32_t>(u / n_groups);
      int64_t tokens = 0;
      for (uint32_t h = 0; h < heads_per_group; ++h) {
        tokens += allocation.HeadBudget(layer, int32_t((u % n_groups) * heads_per_group + h));
      }
      const int64_t per_head_tokens = (tokens + heads_per_group - 1) / heads_per_group;
      pages[u] = uint32_t((per_head_tokens + page_size - 1) / page_size);
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("unknown allocator '", choice.kind, "'"));
  }
  for (uint32_t& p : pages) p = std::max(p, choice.min_pages);
  return pages;
}

namespace {

// Budget per (layer, head group), layer-major.
absl::StatusOr<std::vector<uint32_t>> UnitBudgets(const SimOptions& o, const TraceHeader& h) {
  const uint32_t groups = o.n_head_groups;
  if (h.n_kv_heads % groups != 0) {
    return absl::InvalidArgumentError(absl::StrCat(groups, " head groups do not divide ",
                                                   h.n_kv_heads, " KV heads"));
  }
  const uint32_t units = h.n_layers * groups;
  if (!o.layer_budget_pages.empty() && o.layer_budget_pages.size() != h.n_layers &&
      o.layer_budget_pages.size() != units) {
    return absl::InvalidArgumentError(absl::StrCat(o.layer_budget_pages.size(),
                                                   " budgets for a trace of ", h.n_layers,
                                                   " layers and ", groups, " head groups"));
  }
  const uint32_t context_pages = (h.prompt_len + h.decode_steps + o.page_size - 1) / o.page_size;
  std::vector<uint32_t> budgets(units, o.budget_pages);
  for (uint32_t u = 0; u < units && !o.layer_budget_pages.empty(); ++u) {
    budgets[u] = o.layer_budget_pages.size() == units ? o.layer_budget_pages[u]
                                                       : o.layer_budget_pages[u / groups];
  }
  const bool quest = o.policy == "quest" || o.policy == "quest_per_head";
  // Quest keeps every page unless it pages out; then only its dense layers
  // hold the whole context, as ArkVale's unlimited ones do.
  if (o.policy == "full" || (quest && !o.quest.offload)) budgets.assign(units, context_pages);
  const uint32_t dense = o.policy == "arkvale" ? o.arkvale.n_unlimited_layers
                         : quest               ? o.quest.n_dense_layers
                                               : 0;
  for (uint32_t u = 0; u < std::min(dense * groups, units); ++u) budgets[u] = context_pages;
  return budgets;
}

// One simulation: the policy's lane (one "layer" per (layer, head group))
// and the full-cache reference lane (the trace's layers).
class Simulation {
 public:
  Simulation(const TraceSource& source, const SimOptions& o)
      : source_(source),
        o_(o),
        h_(source.header()),
        groups_(o.n_head_groups),
        threads_(o.threads),
        recall_sum_(o.recall_ks.size(), 0.0),
        recall_n_(o.recall_ks.size(), 0) {}

  absl::Status SetUp() {
    ASSIGN_OR_RETURN(std::vector<uint32_t> budgets, UnitBudgets(o_, h_));
    TraceHeader grouped = h_;
    grouped.n_layers = h_.n_layers * groups_;
    grouped.n_kv_heads = h_.n_kv_heads / groups_;
    grouped.n_q_heads = h_.n_q_heads / groups_;
    ASSIGN_OR_RETURN(auto policy, MakePolicy(o_));
    RETURN_IF_ERROR(SetUpLane(lane_, std::move(policy), grouped, o_, budgets, &threads_,
                              o_.decode));
    // The reference keeps the policy's digest kind, to measure digest recall.
    const uint32_t context_pages =
        (h_.prompt_len + h_.decode_steps + o_.page_size - 1) / o_.page_size;
    return SetUpLane(ref_, std::make_unique<FullCachePolicy>(lane_.policy->digest_kind()), h_,
                     o_, std::vector<uint32_t>(h_.n_layers, context_pages), &threads_,
                     DecodeOptions());
  }

  absl::Status Prefill() {
    for (uint32_t l = 0; l < h_.n_layers; ++l) {
      TracePromptLayer rec;
      RETURN_IF_ERROR(source_.PromptLayer(l, &rec));
      RETURN_IF_ERROR(ref_.runner->Prefill(1, l, rec.keys.data(), rec.values.data(),
                                           h_.prompt_len, rec.queries.data(),
                                           h_.n_prompt_queries, &ref_.prefill_stats));
      for (uint32_t g = 0; g < groups_; ++g) {
        const std::vector<float> k = KvSlice(rec.keys.data(), h_.prompt_len, g);
        const std::vector<float> v = KvSlice(rec.values.data(), h_.prompt_len, g);
        const std::vector<float> q = SliceHeads(rec.queries.data(), h_.n_prompt_queries,
                                                h_.n_q_heads, h_.head_dim, g * QPerGroup(),
                                                QPerGroup());
        RETURN_IF_ERROR(lane_.runner->Prefill(1, l * groups_ + g, k.data(), v.data(),
                                              h_.prompt_len, q.data(), h_.n_prompt_queries,
                                              &lane_.prefill_stats));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Step(uint32_t s) {
    const size_t qd = size_t{h_.n_q_heads} * h_.head_dim;
    std::vector<float> out(qd), out_ref(qd), lse_ref(h_.n_q_heads);
    for (Lane* x : {&lane_, &ref_}) {
      RETURN_IF_ERROR(x->cache->AppendTokenIds(1, {h_.prompt_len + s}));
    }
    for (uint32_t l = 0; l < h_.n_layers; ++l) {
      TraceStep rec;
      RETURN_IF_ERROR(source_.Step(s, l, &rec));
      for (uint32_t g = 0; g < groups_; ++g) {
        // A group's query heads are contiguous, and so are its output rows.
        const std::vector<float> k = KvSlice(rec.key.data(), 1, g);
        const std::vector<float> v = KvSlice(rec.value.data(), 1, g);
        const size_t q_offset = size_t{g} * QPerGroup() * h_.head_dim;
        RETURN_IF_ERROR(lane_.runner->DecodeLayer(1, l * groups_ + g,
                                                  rec.query.data() + q_offset, k.data(),
                                                  v.data(), out.data() + q_offset, nullptr,
                                                  &lane_.stats));
      }
      RETURN_IF_ERROR(ref_.runner->DecodeLayer(1, l, rec.query.data(), rec.key.data(),
                                               rec.value.data(), out_ref.data(), lse_ref.data(),
                                               &ref_.stats));
      RETURN_IF_ERROR(MeasureRecall(l, rec.query.data(), lse_ref.data()));
      const double e = RelError(out, out_ref);
      err_sum_ += e;
      max_err_ = std::max(max_err_, e);
    }
    return absl::OkStatus();
  }

  SimReport Report() const {
    SimReport r;
    r.policy = o_.policy;
    r.n_layers = h_.n_layers;
    r.n_head_groups = groups_;
    r.steps = h_.decode_steps;
    r.context_tokens = h_.prompt_len + h_.decode_steps;
    const uint64_t n = uint64_t{h_.decode_steps} * h_.n_layers;
    r.mean_rel_error = n == 0 ? 0 : err_sum_ / n;
    r.max_rel_error = max_err_;
    r.recall_ks = o_.recall_ks;
    for (size_t i = 0; i < o_.recall_ks.size(); ++i) {
      r.digest_recall.push_back(recall_n_[i] == 0 ? -1.0 : recall_sum_[i] / recall_n_[i]);
    }
    r.stats = lane_.stats;
    r.prefill_stats = lane_.prefill_stats;
    r.reference_stats = ref_.stats;
    r.counters = lane_.cache->counters();
    for (uint32_t u = 0; u < h_.n_layers * groups_; ++u) {
      r.max_pages_in_use = std::max(r.max_pages_in_use, lane_.cache->pool(u).high_water());
    }
    return r;
  }

 private:
  uint32_t KvPerGroup() const { return h_.n_kv_heads / groups_; }
  uint32_t QPerGroup() const { return h_.n_q_heads / groups_; }
  std::vector<float> KvSlice(const float* rows, size_t n, uint32_t g) const {
    return SliceHeads(rows, n, h_.n_kv_heads, h_.head_dim, g * KvPerGroup(), KvPerGroup());
  }

  absl::Status MeasureRecall(uint32_t layer, const float* q, const float* lse) {
    if (o_.recall_ks.empty()) return absl::OkStatus();
    ASSIGN_OR_RETURN(std::vector<double> r,
                     DigestRecallAtK(*ref_.cache, 1, layer, q, lse, o_.recall_ks));
    for (size_t i = 0; i < r.size(); ++i) {
      if (r[i] < 0) continue;
      recall_sum_[i] += r[i];
      ++recall_n_[i];
    }
    return absl::OkStatus();
  }

  const TraceSource& source_;
  const SimOptions& o_;
  const TraceHeader h_;
  const uint32_t groups_;
  kernels::ThreadPool threads_;
  Lane lane_, ref_;
  double err_sum_ = 0, max_err_ = 0;
  std::vector<double> recall_sum_;
  std::vector<uint64_t> recall_n_;
};

}  // namespace

absl::StatusOr<SimReport> RunSimulation(const TraceSource& source, const SimOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  RETURN_IF_ERROR(ValidateTraceHeader(source.header()));
  Simulation sim(source, o);
  RETURN_IF_ERROR(sim.SetUp());
  RETURN_IF_ERROR(sim.Prefill());
  for (uint32_t s = 0; s < source.header().decode_steps; ++s) RETURN_IF_ERROR(sim.Step(s));
  return sim.Report();
}

std::string FormatReport(const SimReport& r) {
  const double steps = std::max<uint64_t>(r.stats.steps, 1);
  auto us = [&](int64_t ns) { return ns / 1e3 / steps; };
  std::string recall = "digest recall:";
  for (size_t i = 0; i < r.recall_ks.size(); ++i) {
    absl::StrAppendFormat(&recall, " @%u=%.3f", r.recall_ks[i], r.digest_recall[i]);
  }
  return recall + "\n" + absl::StrFormat(
      "policy=%s layers=%u head_groups=%u steps=%u context=%u\n"
      "error: mean_rel=%.6g max_rel=%.6g\n"
      "per layer-step us: estimate=%.2f select=%.2f recall=%.2f attention=%.2f append=%.2f "
      "total=%.2f (full cache total=%.2f)\n"
      "decode pages: attended/step=%.2f recalled=%u (%.3f/step) bytes_recalled=%u "
      "(%.0f/step)\n"
      "prefill: recalled=%u us=%.0f; all: backed_up=%u evicted=%u dropped=%u max_in_use=%u\n",
      r.policy, r.n_layers, r.n_head_groups, r.steps, r.context_tokens, r.mean_rel_error, r.max_rel_error,
      us(r.stats.times.estimate_ns), us(r.stats.times.select_ns), us(r.stats.times.recall_ns),
      us(r.stats.times.attention_ns), us(r.stats.times.append_ns), us(r.stats.times.total_ns()),
      r.reference_stats.times.total_ns() / 1e3 / std::max<uint64_t>(r.reference_stats.steps, 1),
      r.stats.pages_attended / steps, r.stats.pages_recalled, r.stats.pages_recalled / steps,
      r.stats.bytes_recalled, r.stats.bytes_recalled / steps, r.prefill_stats.pages_recalled,
      r.prefill_stats.times.total_ns() / 1e3, r.counters.pages_backed_up, r.counters.pages_evicted,
      r.counters.pages_dropped, r.max_pages_in_use);
}

}  // namespace kvtier::worker
