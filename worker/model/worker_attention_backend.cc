#include "worker/model/worker_attention_backend.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/policy/arkv_policy.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/policy/quest_policy.h"
#include "worker/policy/token_policy.h"
#include "worker/policy/window_policy.h"

namespace kvtier::model {
namespace {

uint32_t PagesFor(int tokens, int page_size) {
  return static_cast<uint32_t>((tokens + page_size - 1) / page_size);
}

// Quest and its variants, which keep every page under a per-layer budget.
bool IsQuest(const std::string& name) {
  return name == "quest" || name == "quest_per_head" || name == "quest_exact" ||
         name == "quest_rerank";
}

absl::StatusOr<std::unique_ptr<worker::Policy>> MakePolicy(
    const std::string& name, uint32_t budget_pages, BudgetUnit unit) {
  if (name == "full") return std::make_unique<worker::FullCachePolicy>();
  if (name == "sliding_window" || name == "streaming_llm") {
    return std::make_unique<worker::WindowPolicy>(worker::WindowOptions{
        .n_sink_pages = name == "streaming_llm" ? 1u : 0u});
  }
  const bool memory = unit == BudgetUnit::kResidentMemory;
  if (IsQuest(name)) {
    worker::QuestOptions options;
    options.page_budget = budget_pages;
    options.per_kv_head = name == "quest_per_head";
    options.exact_scores = name == "quest_exact";
    // Four times the attended pages as candidates: on the needle suite it
    // found what exact scores found, twice as many did not
    // (worker/policy/README.md).
    options.rerank = name == "quest_rerank" ? 4 : 0;
    if ((options.exact_scores || options.rerank > 0) && memory) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, " reads the keys of pages it may not attend, so it keeps every page resident: ",
          "use the layer_tokens budget unit"));
    }
    // Under a memory budget Quest pages out, and keeps no dense layers for
    // the reason ArkVale keeps none (below).
    options.offload = memory;
    if (memory) options.n_dense_layers = 0;
    ASSIGN_OR_RETURN(auto p, worker::QuestPolicy::Create(options));
    return std::unique_ptr<worker::Policy>(std::move(p));
  }
  if (name == "arkvale") {
    worker::ArkvaleOptions options;
    options.topk_pages = 0;  // half the budget: valid for any budget
    // Under a memory budget a dense layer would cost the context's pages
    // that the other layers then lack (worker/policy/README.md measures it).
    if (memory) options.n_unlimited_layers = 0;
    ASSIGN_OR_RETURN(auto p, worker::ArkvalePolicy::Create(options));
    return std::unique_ptr<worker::Policy>(std::move(p));
  }
  if (name == "h2o" || name == "h2o_per_head") {
    worker::H2oOptions options;
    options.per_kv_head = name == "h2o_per_head";
    ASSIGN_OR_RETURN(auto p, worker::H2oPolicy::Create(options));
    return std::unique_ptr<worker::Policy>(std::move(p));
  }
  if (name == "tova") return std::make_unique<worker::TovaPolicy>();
  if (name == "arkv" || name == "arkv_last_query" || name == "arkv_per_head") {
    worker::ArkvOptions options;
    options.count_quantized_at_cost = memory;
    if (name == "arkv_last_query") options.score_rows = 1;
    options.per_kv_head = name == "arkv_per_head";
    ASSIGN_OR_RETURN(auto p, worker::ArkvPolicy::Create(options));
    return std::unique_ptr<worker::Policy>(std::move(p));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown policy '", name, "'; known: ",
                   absl::StrJoin(WorkerPolicyNames(), ", ")));
}

}  // namespace

absl::StatusOr<BudgetUnit> ParseBudgetUnit(std::string_view name) {
  if (name == "layer_tokens") return BudgetUnit::kLayerTokens;
  if (name == "memory") return BudgetUnit::kResidentMemory;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown budget unit '", std::string(name), "'; known: layer_tokens, memory"));
}

const char* BudgetUnitName(BudgetUnit unit) {
  return unit == BudgetUnit::kResidentMemory ? "memory" : "layer_tokens";
}

absl::StatusOr<DType> ParseDigestDType(std::string_view name) {
  for (DType type : {DType::kF32, DType::kF16}) {
    if (name == DTypeName(type)) return type;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown digest type '", std::string(name), "'; known: f32, f16"));
}

const std::vector<std::string>& WorkerPolicyNames() {
  static const auto* names = new std::vector<std::string>{
      "full", "sliding_window", "streaming_llm", "quest", "quest_per_head", "quest_exact",
      "quest_rerank", "arkvale", "h2o", "h2o_per_head", "tova", "arkv", "arkv_last_query",
      "arkv_per_head"};
  return *names;
}

bool PolicyKeepsEveryPage(const std::string& name, BudgetUnit unit) {
  return name == "full" || (unit == BudgetUnit::kLayerTokens && IsQuest(name));
}

absl::Status WorkerBackendOptions::Validate() const {
  if (budget_tokens < 0 || page_size < 1 || page_size > 1024 ||
      max_sequences < 1 || prefill_query_rows < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker backend options: budget_tokens=", budget_tokens,
        " (>= 0), page_size=", page_size, " (1..1024), max_sequences=",
        max_sequences, " (> 0), prefill_query_rows=", prefill_query_rows,
        " (> 0)"));
  }
  if (digest_dtype != DType::kF32 && digest_dtype != DType::kF16) {
    return absl::InvalidArgumentError(absl::StrCat(
        "worker backend options: digest type ", DTypeName(digest_dtype), " is not f32 or f16"));
  }
  return prefix_fetch.Validate();
}

absl::StatusOr<std::unique_ptr<WorkerAttentionBackend>>
WorkerAttentionBackend::Create(const AttentionShape& shape,
                               const WorkerBackendOptions& options) {
  RETURN_IF_ERROR(shape.Validate());
  RETURN_IF_ERROR(options.Validate());
  const uint32_t context_pages = PagesFor(shape.max_positions, options.page_size);
  const uint32_t budget_pages =
      options.budget_tokens == 0
          ? context_pages
          : std::min(context_pages,
                     PagesFor(options.budget_tokens, options.page_size));
  if (options.policy == "full" && budget_pages < context_pages) {
    return absl::InvalidArgumentError(absl::StrCat(
        "policy 'full' keeps the whole context of ", shape.max_positions,
        " tokens; a budget of ", options.budget_tokens, " is too small"));
  }
  const bool keeps_every_page = PolicyKeepsEveryPage(options.policy, options.budget_unit);
  const bool memory = options.budget_unit == BudgetUnit::kResidentMemory;
  std::unique_ptr<worker::Policy> policy;
  ASSIGN_OR_RETURN(policy, MakePolicy(options.policy, budget_pages, options.budget_unit));
  const uint32_t resident_pages = keeps_every_page ? context_pages : budget_pages;
  std::vector<uint32_t> layer_budgets(shape.n_layers, resident_pages);
  if (!options.layer_budget_tokens.empty()) {
    if (keeps_every_page) {
      return absl::InvalidArgumentError(
          absl::StrCat("policy '", options.policy,
                       "' keeps every page resident; per-layer budgets do not apply"));
    }
    if (options.layer_budget_tokens.size() != static_cast<size_t>(shape.n_layers)) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.layer_budget_tokens.size(), " per-layer budgets for ",
                       shape.n_layers, " layers"));
    }
    for (int l = 0; l < shape.n_layers; ++l) {
      const int tokens = options.layer_budget_tokens[l];
      if (tokens < 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("layer ", l, " budget of ", tokens, " tokens: must be positive"));
      }
      layer_budgets[l] = std::min(context_pages, PagesFor(tokens, options.page_size));
    }
    if (memory && options.budget_tokens > 0) {
      // Rounded up to whole pages (and raised to each policy's floor by the
      // allocator), per-layer budgets can add up to more than the memory
      // budget: the largest give pages back until they fit.
      const uint64_t total = uint64_t{budget_pages} * shape.n_layers;
      uint64_t sum = std::accumulate(layer_budgets.begin(), layer_budgets.end(), uint64_t{0});
      for (; sum > total; --sum) --*std::max_element(layer_budgets.begin(), layer_budgets.end());
    }
  }
  if (const auto* ark = dynamic_cast<const worker::ArkvalePolicy*>(policy.get());
      ark != nullptr) {
    // ArkVale's first layers keep a full cache: they get the context.
    const worker::ArkvaleOptions& a = ark->options();
    const uint32_t n_dense = std::min<uint32_t>(a.n_unlimited_layers, shape.n_layers);
    // Top-k (half the budget unless set) in [sinks + window, budget).
    const uint32_t min_pages =
        a.topk_pages == 0 ? 2 * (a.n_sink_pages + a.n_win_pages) : a.topk_pages + 1;
    for (size_t l = n_dense; memory && l < layer_budgets.size(); ++l) {
      if (layer_budgets[l] < min_pages) {
        return absl::InvalidArgumentError(absl::StrCat(
            "arkvale under a memory budget: layer ", l, " gets ", layer_budgets[l],
            " pages, below the ", min_pages, " its top-k needs"));
      }
    }
    for (uint32_t l = 0; l < n_dense; ++l) layer_budgets[l] = context_pages;
  }
  std::unique_ptr<WorkerAttentionBackend> b(
      new WorkerAttentionBackend(shape, std::move(layer_budgets),
                                 options.prefill_query_rows, options.max_sequences));
  b->policy_ = std::move(policy);
  b->prefix_fetch_ = options.prefix_fetch;
  ASSIGN_OR_RETURN(b->device_, worker::CreateDevice(options.device));
  if (b->policy_->offloads() || options.store != nullptr) {
    worker::PageStoreBackend* store = options.store;
    if (store == nullptr) {
      b->store_ = std::make_unique<worker::InProcessPageStore>();
      store = b->store_.get();
    }
    ASSIGN_OR_RETURN(b->transfers_,
                     worker::PageTransferQueue::Create(store, {}));
  }
  worker::KvCacheOptions o;
  o.layout = PageLayout{.page_size = static_cast<uint32_t>(options.page_size),
                        .n_kv_heads = static_cast<uint32_t>(shape.n_kv_heads),
                        .head_dim = static_cast<uint32_t>(shape.head_dim),
                        .dtype = DType::kF32};
  o.digest_dtype = options.digest_dtype;
  o.n_layers = shape.n_layers;
  o.n_q_heads = shape.n_heads;
  o.pool_pages_per_layer =
      *std::max_element(b->layer_budgets_.begin(), b->layer_budgets_.end()) *
      options.max_sequences;
  o.max_pages_per_sequence = context_pages + 1;
  o.max_sequences = options.max_sequences;
  ASSIGN_OR_RETURN(b->cache_, worker::KvCacheManager::Create(
                                  o, b->device_.get(), b->policy_.get(),
                                  b->transfers_.get()));
  b->runner_ = std::make_unique<worker::DecodeRunner>(b->cache_.get(), nullptr);
  return b;
}

WorkerAttentionBackend::WorkerAttentionBackend(
    const AttentionShape& shape, std::vector<uint32_t> layer_budgets,
    int prefill_query_rows, int max_sequences)
    : shape_(shape),
      layer_budgets_(std::move(layer_budgets)),
      prefill_query_rows_(prefill_query_rows),
      prompt_buffers_(size_t{2} * shape.n_layers * std::max(1, max_sequences)),
      layer_bytes_(shape.n_layers, 0),
      layer_peak_bytes_(shape.n_layers, 0),
      layer_digest_bytes_(shape.n_layers, 0) {}

WorkerAttentionBackend::~WorkerAttentionBackend() = default;

uint64_t WorkerAttentionBackend::resident_pages() const {
  uint64_t pages = 0;
  for (int l = 0; l < shape_.n_layers; ++l) {
    pages += cache_->pool(static_cast<uint32_t>(l)).in_use();
  }
  return pages;
}

uint64_t WorkerAttentionBackend::peak_resident_pages() const {
  uint64_t pages = 0;
  for (int l = 0; l < shape_.n_layers; ++l) {
    pages += cache_->pool(static_cast<uint32_t>(l)).high_water();
  }
  return pages;
}

void WorkerAttentionBackend::SampleResident(int layer) {
  const auto l = static_cast<uint32_t>(layer);
  const uint64_t now =
      cache_->pool(l).in_use() * page_bytes() + policy_->own_layer_kv_bytes(l);
  resident_bytes_ = resident_bytes_ - layer_bytes_[l] + now;
  layer_bytes_[l] = now;
  layer_peak_bytes_[l] = std::max(layer_peak_bytes_[l], now);
  peak_bytes_ = std::max(peak_bytes_, resident_bytes_);
  const uint64_t digests = cache_->ScoredDigestBytes(l);
  digest_bytes_ = digest_bytes_ - layer_digest_bytes_[l] + digests;
  layer_digest_bytes_[l] = digests;
  peak_digest_bytes_ = std::max(peak_digest_bytes_, digest_bytes_);
}

uint64_t WorkerAttentionBackend::pool_capacity_pages() const {
  uint64_t pages = 0;
  for (int l = 0; l < shape_.n_layers; ++l) {
    pages += cache_->pool(static_cast<uint32_t>(l)).capacity();
  }
  return pages;
}

absl::Status WorkerAttentionBackend::StartSequence(SequenceId seq) {
  if (sequences_.contains(seq)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq, " is live"));
  }
  RETURN_IF_ERROR(cache_->AddSequence(seq, layer_budgets_));
  sequences_[seq].layers.resize(shape_.n_layers);
  return absl::OkStatus();
}

absl::Status WorkerAttentionBackend::EndSequence(SequenceId seq) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  // A complete prompt never handed off still gives the store its pages.
  absl::Status handed_off;
  if (it->second.prompt_complete && !it->second.reuse_failed) handed_off = HandOffPrompt(seq);
  // Nothing may write into the prompt rows once they go back to the pool.
  it->second.fetch.reset();
  for (LayerState& l : it->second.layers) {
    prompt_buffers_.Release(l.prompt_k);
    prompt_buffers_.Release(l.prompt_v);
  }
  sequences_.erase(it);
  absl::Status cancelled = cache_->Cancel(seq);
  for (int layer = 0; layer < shape_.n_layers; ++layer) SampleResident(layer);
  if (!handed_off.ok()) {
    return absl::Status(handed_off.code(), absl::StrCat("sequence ", seq, " ended, but its "
                                                        "prompt was not handed to the cache: ",
                                                        handed_off.message()));
  }
  return cancelled;
}

absl::StatusOr<WorkerAttentionBackend::LayerState*>
WorkerAttentionBackend::Find(SequenceId seq, int layer) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  if (layer < 0 || layer >= shape_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("bad layer ", layer));
  }
  return &it->second.layers[layer];
}

absl::Status WorkerAttentionBackend::AppendTokens(
    SequenceId seq, int pos0, absl::Span<const int> tokens) {
  if (!sequences_.contains(seq)) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  // Pages are keyed by the tokens they hold, so the ids must arrive in
  // order, each position once.
  ASSIGN_OR_RETURN(const uint32_t known, cache_->TokenIdCount(seq));
  if (pos0 < 0 || static_cast<uint32_t>(pos0) != known) {
    return absl::InvalidArgumentError(absl::StrCat("tokens of sequence ", seq, " from position ",
                                                   pos0, " but ", known, " are known"));
  }
  std::vector<uint32_t> ids;
  ids.reserve(tokens.size());
  for (int t : tokens) {
    if (t < 0) return absl::InvalidArgumentError("negative token id");
    ids.push_back(static_cast<uint32_t>(t));
  }
  return cache_->AppendTokenIds(seq, ids);
}

absl::Status WorkerAttentionBackend::FlushPrompt(SequenceId seq, int layer,
                                                 LayerState& s) {
  if (s.prompt_tokens > 0) {
    const uint32_t rows = s.recent_q.size() / shape_.q_dim();
    RETURN_IF_ERROR(runner_->Prefill(seq, layer, s.prompt_k.data(),
                                     s.prompt_v.data(), s.prompt_tokens,
                                     s.recent_q.data(), rows, &stats_));
    SampleResident(layer);
  }
  prompt_buffers_.Release(s.prompt_k);
  prompt_buffers_.Release(s.prompt_v);
  s.recent_q = {};
  s.decoding = true;
  return absl::OkStatus();
}

absl::Status WorkerAttentionBackend::EndPrefill(SequenceId seq) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  it->second.prompt_complete = true;
  return absl::OkStatus();
}

absl::Status WorkerAttentionBackend::HandOffPrompt(SequenceId seq) {
  for (int layer = 0; layer < shape_.n_layers; ++layer) {
    ASSIGN_OR_RETURN(LayerState * s, Find(seq, layer));
    if (s->awaiting_prefix) RETURN_IF_ERROR(TakePrefix(seq, layer, *s));
    if (!s->decoding) RETURN_IF_ERROR(FlushPrompt(seq, layer, *s));
  }
  return absl::OkStatus();
}

absl::Status WorkerAttentionBackend::Append(SequenceId seq, int layer, int pos,
                                            absl::Span<const float> k,
                                            absl::Span<const float> v) {
  ASSIGN_OR_RETURN(LayerState * s, Find(seq, layer));
  const size_t kv_dim = shape_.kv_dim();
  if (k.size() != kv_dim || v.size() != kv_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "k/v of ", k.size(), "/", v.size(), " floats, want ", kv_dim));
  }
  if (pos != s->positions || s->pending) {
    return absl::InvalidArgumentError(absl::StrCat(
        "append at position ", pos, " but layer ", layer, " of sequence ",
        seq, " expects ", s->positions,
        s->pending ? " after attending the pending token" : ""));
  }
  if (s->awaiting_prefix) RETURN_IF_ERROR(TakePrefix(seq, layer, *s));
  if (!s->decoding) RETURN_IF_ERROR(FlushPrompt(seq, layer, *s));
  s->k.assign(k.begin(), k.end());
  s->v.assign(v.begin(), v.end());
  s->pending = true;
  ++s->positions;
  return absl::OkStatus();
}

absl::Status WorkerAttentionBackend::Attend(SequenceId seq, int layer,
                                            absl::Span<const float> q,
                                            absl::Span<float> out) {
  ASSIGN_OR_RETURN(LayerState * s, Find(seq, layer));
  if (q.size() != static_cast<size_t>(shape_.q_dim()) ||
      out.size() != q.size()) {
    return absl::InvalidArgumentError("q/out size differs from the shape");
  }
  if (!s->pending) {
    return absl::FailedPreconditionError(
        "attend needs the token's K/V appended first");
  }
  s->pending = false;
  RETURN_IF_ERROR(runner_->DecodeLayer(seq, layer, q.data(), s->k.data(), s->v.data(),
                                       out.data(), nullptr, &stats_));
  SampleResident(layer);
  return absl::OkStatus();
}

absl::Status WorkerAttentionBackend::AppendAndAttendBatch(
    SequenceId seq, int layer, int pos0, int n_tokens,
    absl::Span<const float> k, absl::Span<const float> v,
    absl::Span<const float> q, absl::Span<float> out) {
  ASSIGN_OR_RETURN(LayerState * s, Find(seq, layer));
  const size_t kv_dim = shape_.kv_dim();
  const size_t q_dim = shape_.q_dim();
  if (n_tokens <= 0 || k.size() != kv_dim * n_tokens ||
      v.size() != k.size() || q.size() != q_dim * n_tokens ||
      out.size() != q.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", n_tokens, " tokens has mismatched spans"));
  }
  if (s->decoding) {
    return absl::FailedPreconditionError(
        "a prompt batch after decoding started is not supported");
  }
  if (pos0 != s->positions || pos0 + n_tokens > shape_.max_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch at position ", pos0, " of ", n_tokens, " tokens; expected ",
        s->positions, " and at most ", shape_.max_positions, " in all"));
  }
  if (s->awaiting_prefix) RETURN_IF_ERROR(TakePrefix(seq, layer, *s));
  if (s->prompt_k.size() + k.size() > s->prompt_k.capacity()) {
    const size_t floats = std::max(s->prompt_k.size() + k.size(), 2 * s->prompt_k.capacity());
    prompt_buffers_.Reserve(s->prompt_k, floats);
    prompt_buffers_.Reserve(s->prompt_v, floats);
  }
  s->prompt_k.insert(s->prompt_k.end(), k.begin(), k.end());
  s->prompt_v.insert(s->prompt_v.end(), v.begin(), v.end());
  DenseCausalAttention(shape_, q.data(), n_tokens, s->prompt_k.data(),
                       s->prompt_v.data(), s->prompt_tokens, out.data());
  s->prompt_tokens += n_tokens;
  s->positions += n_tokens;
  // Keep the last prefill_query_rows query rows, oldest first.
  s->recent_q.insert(s->recent_q.end(), q.begin(), q.end());
  const size_t keep = q_dim * prefill_query_rows_;
  if (s->recent_q.size() > keep) {
    s->recent_q.erase(s->recent_q.begin(),
                      s->recent_q.end() - static_cast<ptrdiff_t>(keep));
  }
  return absl::OkStatus();
}

uint64_t WorkerAttentionBackend::page_bytes() const { return cache_->layout().PageBytes(); }

}  // namespace kvtier::model
