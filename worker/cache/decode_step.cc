#include "worker/cache/decode_step.h"

#include <algorithm>
#include <cmath>

#include "absl/time/clock.h"
#include "common/page_layout.h"
#include "common/status_macros.h"
#include "kernels/decode_attention.h"
#include "kernels/dtype.h"
#include "kernels/estimate.h"
#include "worker/policy/policy.h"
#include "worker/policy/token_policy.h"

namespace kvtier::worker {
namespace {

int64_t NowNs() { return absl::GetCurrentTimeNanos(); }

// a . b in eight independent sums, which the compiler can vectorise.
float Dot(const float* a, const float* b, uint32_t n) {
  float acc[8] = {};
  uint32_t c = 0;
  for (; c + 8 <= n; c += 8) {
    for (uint32_t l = 0; l < 8; ++l) acc[l] += a[c + l] * b[c + l];
  }
  float sum = 0.0f;
  for (uint32_t l = 0; l < 8; ++l) sum += acc[l];
  for (; c < n; ++c) sum += a[c] * b[c];
  return sum;
}

// Stateless, so one instance serves every runner.
Device* HostDevice() {
  static CpuDevice* const host = new CpuDevice();
  return host;
}

}  // namespace

DecodeRunner::DecodeRunner(KvCacheManager* cache, kernels::ThreadPool* threads,
                           DecodeOptions options)
    : cache_(cache),
      threads_(threads),
      options_(options),
      device_scratch_(cache->device()),
      host_scratch_(HostDevice()) {}

absl::Status DecodeRunner::Prefetch(uint64_t seq_id, uint32_t layer, const float* q,
                                    StepStats* stats) {
  // Scores from another layer's query only guess this layer's needs; the
  // real plan of the layer's own step corrects them.
  RETURN_IF_ERROR(cache_->FinishRecalls(seq_id, layer));
  ASSIGN_OR_RETURN(PagePlan plan, EstimateAndPlan(seq_id, layer, q, /*prefill=*/false, stats));
  const int64_t t0 = NowNs();
  absl::Status s = cache_->ApplyPlan(seq_id, layer, plan);
  stats->times.recall_ns += NowNs() - t0;
  return s;
}

absl::StatusOr<PagePlan> DecodeRunner::EstimateAndPlan(uint64_t seq_id, uint32_t layer,
                                                       const float* q, bool prefill,
                                                       StepStats* stats) {
  ASSIGN_OR_RETURN(LayerView view, cache_->View(seq_id, layer));
  view.prefill = prefill;
  Policy* policy = cache_->policy();
  const int64_t t0 = NowNs();
  if (policy->NeedsScores(view) && view.n_digested > 0) {
    const KvCacheOptions& o = cache_->options();
    const uint32_t n = view.n_digested;
    ASSIGN_OR_RETURN(const void* digests, cache_->DeviceDigests(seq_id, layer));
    std::vector<int32_t> indptr = {0, static_cast<int32_t>(n)};
    std::vector<int32_t> digest_slots(n);
    for (uint32_t i = 0; i < n; ++i) digest_slots[i] = static_cast<int32_t>(i);
    row_scores_.resize(size_t{n} * o.layout.n_kv_heads);
    kernels::EstimateArgs args;
    args.queries = q;
    args.query_type = kernels::ScalarType::kF32;
    args.batch = 1;
    args.n_q_heads = o.n_q_heads;
    args.n_kv_heads = o.layout.n_kv_heads;
    args.head_dim = o.layout.head_dim;
    args.digests = digests;
    args.digest_type = cache_->digest_type();
    args.kind = policy->digest_kind();
    args.digest_capacity = n;
    args.page_indptr = indptr.data();
    args.digest_slots = digest_slots.data();
    args.total_pages = n;
    args.reduce = kernels::HeadReduce::kGroupSum;
    args.scores = row_scores_.data();
    RETURN_IF_ERROR(EstimateScores(args, &device_scratch_, threads_));
    // One ranking per layer: rows added in head order.
    scores_.assign(n, 0.0f);
    for (uint32_t r = 0; r < o.layout.n_kv_heads; ++r) {
      for (uint32_t i = 0; i < n; ++i) scores_[i] += row_scores_[size_t{r} * n + i];
    }
    // More candidates than pages: every page is one.
    if (const uint32_t c = policy->rerank_candidates(view); c > 0) {
      RETURN_IF_ERROR(RerankExact(seq_id, layer, q, n, std::min(c, n)));
    }
    view.scores = scores_;
    view.head_scores = row_scores_;
  }
  const int64_t t1 = NowNs();
  absl::StatusOr<PagePlan> plan = policy->Plan(view);
  stats->times.estimate_ns += t1 - t0;
  stats->times.select_ns += NowNs() - t1;
  return plan;
}

absl::Status DecodeRunner::RerankExact(uint64_t seq_id, uint32_t layer, const float* q,
                                       uint32_t n, uint32_t candidates) {
  const KvCacheOptions& o = cache_->options();
  const PageLayout& lay = o.layout;
  std::vector<int32_t> order(n);
  for (uint32_t i = 0; i < n; ++i) order[i] = static_cast<int32_t>(i);
  // Highest estimate first (NaN last), the lower page on ties.
  std::partial_sort(order.begin(), order.begin() + candidates, order.end(),
                    [&](int32_t a, int32_t b) {
                      const float sa = RankedScore(scores_[a]), sb = RankedScore(scores_[b]);
                      return sa != sb ? sa > sb : a < b;
                    });
  order.resize(candidates);
  std::sort(order.begin(), order.end());
  int32_t last_len = 0;
  RETURN_IF_ERROR(cache_->AttentionPages(seq_id, layer, order, &slots_, &last_len));
  // The candidates' keys only, as fp32 [candidates * page_size][n_kv_heads][head_dim].
  const PagePool& pool = cache_->pool(layer);
  const size_t elements = lay.ElementsPerTensor();
  key_page_.resize(elements * DTypeBytes(lay.dtype));
  exact_keys_.resize(size_t{candidates} * elements);
  const auto type = static_cast<kernels::ScalarType>(lay.dtype);
  for (uint32_t c = 0; c < candidates; ++c) {
    RETURN_IF_ERROR(pool.ReadSlot(slots_[c], 0, key_page_.data(), key_page_.size()));
    float* keys = &exact_keys_[c * elements];
    const auto* halves = reinterpret_cast<const uint16_t*>(key_page_.data());
    // One loop per type, so that the conversion vectorises.
    switch (type) {
      case kernels::ScalarType::kF16:
        for (size_t e = 0; e < elements; ++e) keys[e] = kernels::HalfToFloat(halves[e]);
        break;
      case kernels::ScalarType::kBF16:
        for (size_t e = 0; e < elements; ++e) keys[e] = kernels::BF16ToFloat(halves[e]);
        break;
      default:
        for (size_t e = 0; e < elements; ++e) {
          keys[e] = kernels::LoadAsFloat(key_page_.data(), type, e);
        }
    }
  }
  // Each query head's softmax over the candidates' tokens, its mass summed
  // per page into its KV head's row.
  const uint32_t m = candidates * lay.page_size;
  const uint32_t n_kv = lay.n_kv_heads;
  const uint32_t d = lay.head_dim;
  const uint32_t group = o.n_q_heads / n_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  scores_.assign(n, -1.0f);
  row_scores_.assign(size_t{n_kv} * n, -1.0f);
  for (uint32_t c = 0; c < candidates; ++c) {
    scores_[order[c]] = 0.0f;
    for (uint32_t g = 0; g < n_kv; ++g) row_scores_[size_t{g} * n + order[c]] = 0.0f;
  }
  exact_mass_.resize(m);
  for (uint32_t h = 0; h < o.n_q_heads; ++h) {
    const uint32_t g = h / group;
    float top = -INFINITY;
    for (uint32_t j = 0; j < m; ++j) {
      exact_mass_[j] = scale * Dot(q + size_t{h} * d, &exact_keys_[(size_t{j} * n_kv + g) * d], d);
      top = std::max(top, exact_mass_[j]);
    }
    float sum = 0.0f;
    for (uint32_t j = 0; j < m; ++j) {
      exact_mass_[j] = std::exp(exact_mass_[j] - top);
      sum += exact_mass_[j];
    }
    for (uint32_t c = 0; c < candidates; ++c) {
      float mass = 0.0f;
      for (uint32_t t = 0; t < lay.page_size; ++t) mass += exact_mass_[c * lay.page_size + t];
      row_scores_[size_t{g} * n + order[c]] += mass / sum;
    }
  }
  for (uint32_t c = 0; c < candidates; ++c) {
    for (uint32_t g = 0; g < n_kv; ++g) scores_[order[c]] += row_scores_[size_t{g} * n + order[c]];
  }
  return absl::OkStatus();
}

absl::Status DecodeRunner::Prefill(uint64_t seq_id, uint32_t layer, const float* k,
                                   const float* v, uint32_t n, const float* queries,
                                   uint32_t n_queries, StepStats* stats) {
  if (n_queries == 0 || queries == nullptr) {
    return absl::InvalidArgumentError("prefill needs at least the last prompt query");
  }
  if (TokenPolicy* tp = cache_->policy()->AsTokenPolicy(); tp != nullptr) {
    const int64_t t0 = NowNs();
    absl::Status s =
        tp->RunPrefill(TokenContext{cache_, seq_id, layer}, k, v, n, queries, n_queries);
    stats->times.select_ns += NowNs() - t0;
    return s;
  }
  const KvCacheOptions& o = cache_->options();
  const float* last_q = queries + size_t{n_queries - 1} * o.n_q_heads * o.layout.head_dim;
  const int64_t t0 = NowNs();
  RETURN_IF_ERROR(cache_->AppendKv(seq_id, layer, k, v, n));
  stats->times.append_ns += NowNs() - t0;
  ASSIGN_OR_RETURN(PagePlan plan, EstimateAndPlan(seq_id, layer, last_q, /*prefill=*/true, stats));
  const CacheCounters before = cache_->counters();
  const int64_t t1 = NowNs();
  RETURN_IF_ERROR(cache_->ApplyPlan(seq_id, layer, plan));
  absl::Status recalled = cache_->FinishRecalls(seq_id, layer);
  stats->times.recall_ns += NowNs() - t1;
  stats->pages_recalled += cache_->counters().pages_recalled - before.pages_recalled;
  stats->bytes_recalled += cache_->counters().bytes_recalled - before.bytes_recalled;
  return recalled;
}

absl::Status DecodeRunner::DecodeLayer(uint64_t seq_id, uint32_t layer, const float* q,
                                       const float* k, const float* v, float* out, float* lse,
                                       StepStats* stats) {
  const CacheCounters before = cache_->counters();
  int64_t t0 = NowNs();
  // Pages prefetched during the previous layer land first.
  absl::Status prefetched = cache_->FinishRecalls(seq_id, layer);
  stats->times.recall_ns += NowNs() - t0;
  RETURN_IF_ERROR(prefetched);
  t0 = NowNs();
  RETURN_IF_ERROR(cache_->AppendKv(seq_id, layer, k, v, 1));
  stats->times.append_ns += NowNs() - t0;
  ASSIGN_OR_RETURN(PagePlan plan, EstimateAndPlan(seq_id, layer, q, /*prefill=*/false, stats));
  ++stats->steps;
  stats->pages_attended += plan.attend.size();

  // Pages of the plan resident before the recall: attended while it runs.
  ASSIGN_OR_RETURN(LayerView before_view, cache_->View(seq_id, layer));
  std::vector<int32_t> ready, recalled;
  for (int32_t p : plan.attend) {
    (IsResident(before_view.states[p]) ? ready : recalled).push_back(p);
  }
  int64_t t1 = NowNs();
  RETURN_IF_ERROR(cache_->ApplyPlan(seq_id, layer, plan));
  stats->times.recall_ns += NowNs() - t1;
  if (options_.prefetch_next_layer && cache_->policy()->offloads() &&
      layer + 1 < cache_->options().n_layers) {
    RETURN_IF_ERROR(Prefetch(seq_id, layer + 1, q, stats));
  }

  std::vector<float> own_lse;
  if (lse == nullptr) {
    own_lse.resize(cache_->options().n_q_heads);
    lse = own_lse.data();
  }
  if (!plan.head_attend.empty()) {
    // Per-head lists read every page in one launch: recalls land first.
    t1 = NowNs();
    absl::Status recall_status = cache_->FinishRecalls(seq_id, layer);
    stats->times.recall_ns += NowNs() - t1;
    RETURN_IF_ERROR(recall_status);
    stats->pages_recalled += cache_->counters().pages_recalled - before.pages_recalled;
    stats->bytes_recalled += cache_->counters().bytes_recalled - before.bytes_recalled;
    t1 = NowNs();
    RETURN_IF_ERROR(AttendHeads(seq_id, layer, q, plan.head_attend, out, lse));
    stats->times.attention_ns += NowNs() - t1;
    return absl::OkStatus();
  }
  TokenPolicy* token_policy = cache_->policy()->AsTokenPolicy();
  const AuxKv aux = token_policy != nullptr ? token_policy->Auxiliary(seq_id, layer) : AuxKv();
  RETURN_IF_ERROR(AttendOverlapped(seq_id, layer, q, ready, recalled, aux, out, lse, stats));
  stats->pages_recalled += cache_->counters().pages_recalled - before.pages_recalled;
  stats->bytes_recalled += cache_->counters().bytes_recalled - before.bytes_recalled;
  if (token_policy != nullptr) {
    const int64_t t2 = NowNs();
    absl::Status s =
        token_policy->RunAfterAttention(TokenContext{cache_, seq_id, layer}, q, lse);
    stats->times.select_ns += NowNs() - t2;
    return s;
  }
  return absl::OkStatus();
}

absl::Status DecodeRunner::AttendOverlapped(uint64_t seq_id, uint32_t layer, const float* q,
                                            const std::vector<int32_t>& ready,
                                            const std::vector<int32_t>& recalled,
                                            const AuxKv& aux, float* out, float* lse,
                                            StepStats* stats) {
  const KvCacheOptions& o = cache_->options();
  int64_t t1 = NowNs();
  if (recalled.empty() && aux.n_pages == 0) {
    absl::Status recall_status = cache_->FinishRecalls(seq_id, layer);
    stats->times.recall_ns += NowNs() - t1;
    RETURN_IF_ERROR(recall_status);
    t1 = NowNs();
    RETURN_IF_ERROR(Attend(seq_id, layer, q, ready, out, lse));
    stats->times.attention_ns += NowNs() - t1;
    return absl::OkStatus();
  }
  // Partial states: the ready pages (while the recall runs), the recalled
  // pages, the policy's auxiliary pages; merged by log-sum-exp.
  std::vector<std::vector<float>> outs, lses;
  auto next_state = [&]() -> std::pair<float*, float*> {
    outs.emplace_back(size_t{o.n_q_heads} * o.layout.head_dim);
    lses.emplace_back(o.n_q_heads);
    return {outs.back().data(), lses.back().data()};
  };
  auto [o0, l0] = next_state();
  RETURN_IF_ERROR(Attend(seq_id, layer, q, ready, o0, l0));
  stats->times.attention_ns += NowNs() - t1;
  t1 = NowNs();
  absl::Status recall_status = cache_->FinishRecalls(seq_id, layer);
  stats->times.recall_ns += NowNs() - t1;
  RETURN_IF_ERROR(recall_status);
  t1 = NowNs();
  if (!recalled.empty()) {
    auto [o1, l1] = next_state();
    RETURN_IF_ERROR(Attend(seq_id, layer, q, recalled, o1, l1));
  }
  if (aux.n_pages > 0) {
    std::vector<int32_t> aux_pages(aux.n_pages);
    for (uint32_t i = 0; i < aux.n_pages; ++i) aux_pages[i] = static_cast<int32_t>(i);
    auto [o2, l2] = next_state();
    RETURN_IF_ERROR(AttendPool(&host_scratch_, aux.pool, aux.page_stride_bytes, aux.n_pages,
                               aux_pages, aux.last_page_len, q, o2, l2));
  }
  RETURN_IF_ERROR(Merge(outs, lses, out, lse));
  stats->times.attention_ns += NowNs() - t1;
  return absl::OkStatus();
}

absl::Status DecodeRunner::Merge(const std::vector<std::vector<float>>& outs,
                                 const std::vector<std::vector<float>>& lses, float* out,
                                 float* lse) {
  const KvCacheOptions& o = cache_->options();
  const size_t rows = o.n_q_heads;
  const size_t d = o.layout.head_dim;
  const size_t n = outs.size();
  partial_out_.assign(rows * n * d, 0.0f);
  partial_lse_.assign(rows * n, 0.0f);
  for (size_t r = 0; r < rows; ++r) {
    for (size_t st = 0; st < n; ++st) {
      std::copy_n(&outs[st][r * d], d, &partial_out_[(r * n + st) * d]);
      partial_lse_[r * n + st] = lses[st][r];
    }
  }
  kernels::MergeStatesArgs merge;
  merge.states_out = partial_out_.data();
  merge.states_lse = partial_lse_.data();
  merge.n_rows = static_cast<uint32_t>(rows);
  merge.n_states = static_cast<uint32_t>(n);
  merge.head_dim = static_cast<uint32_t>(d);
  merge.out = out;
  merge.lse = lse;
  return MergeAttentionStates(merge, &device_scratch_, threads_);
}

absl::Status DecodeRunner::Attend(uint64_t seq_id, uint32_t layer, const float* q,
                                  const std::vector<int32_t>& pages, float* out, float* lse) {
  int32_t last_len = 0;
  if (pages.empty()) return AttendPool(&host_scratch_, nullptr, 0, 0, {}, 0, q, out, lse);
  RETURN_IF_ERROR(cache_->AttentionPages(seq_id, layer, pages, &slots_, &last_len));
  const PagePool& pool = cache_->pool(layer);
  // The pool's address is only handed to the kernel of its own backend.
  return AttendPool(&device_scratch_, pool.base(), pool.page_bytes(), pool.capacity(), slots_,
                    last_len, q, out, lse);
}

absl::Status DecodeRunner::AttendHeads(uint64_t seq_id, uint32_t layer, const float* q,
                                       const std::vector<std::vector<int32_t>>& lists,
                                       float* out, float* lse) {
  head_slots_.clear();
  head_indptr_.assign(1, 0);
  int32_t last_len = 0;
  for (const std::vector<int32_t>& pages : lists) {
    // Every list ends with the sequence's last page (CheckPlan), so each
    // gives the same last_len.
    RETURN_IF_ERROR(cache_->AttentionPages(seq_id, layer, pages, &slots_, &last_len));
    head_slots_.insert(head_slots_.end(), slots_.begin(), slots_.end());
    head_indptr_.push_back(static_cast<int32_t>(head_slots_.size()));
  }
  const PagePool& pool = cache_->pool(layer);
  return AttendPool(&device_scratch_, pool.base(), pool.page_bytes(), pool.capacity(),
                    head_slots_, last_len, q, out, lse, head_indptr_);
}

absl::Status DecodeRunner::AttendPool(KernelScratch* scratch, const void* pool,
                                      size_t page_stride_bytes, uint32_t pool_pages,
                                      const std::vector<int32_t>& slots, int32_t last_len,
                                      const float* q, float* out, float* lse,
                                      absl::Span<const int32_t> head_indptr) {
  const KvCacheOptions& o = cache_->options();
  if (slots.empty()) {
    // Nothing to attend: the empty softmax state, which a merge ignores.
    std::fill_n(out, size_t{o.n_q_heads} * o.layout.head_dim, 0.0f);
    std::fill_n(lse, o.n_q_heads, -INFINITY);
    return absl::OkStatus();
  }
  const int32_t shared_indptr[2] = {0, static_cast<int32_t>(slots.size())};
  kernels::DecodeAttentionArgs args;
  args.queries = q;
  args.query_type = kernels::ScalarType::kF32;
  args.batch = 1;
  args.n_q_heads = o.n_q_heads;
  args.sm_scale = 1.0f / std::sqrt(static_cast<float>(o.layout.head_dim));
  args.kv.pool = pool;
  args.kv.kv_type = static_cast<kernels::ScalarType>(o.layout.dtype);
  args.kv.page_size = o.layout.page_size;
  args.kv.n_kv_heads = o.layout.n_kv_heads;
  args.kv.head_dim = o.layout.head_dim;
  args.kv.page_stride_bytes = page_stride_bytes;
  args.kv.pool_pages = pool_pages;
  args.kv.per_head_lists = !head_indptr.empty();
  args.kv.indptr = head_indptr.empty() ? shared_indptr : head_indptr.data();
  args.kv.indices = slots.data();
  args.kv.last_page_len = &last_len;
  args.kv.total_entries = static_cast<uint32_t>(slots.size());
  args.out = out;
  args.lse = lse;
  return DecodeAttention(args, scratch, threads_);
}

}  // namespace kvtier::worker
