#include "worker/decode_step.h"

#include <algorithm>
#include <cmath>

#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "kernels/decode_attention.h"
#include "kernels/estimate.h"
#include "worker/token_attention.h"
#include "worker/token_policy.h"

namespace kvtier::worker {
namespace {

int64_t NowNs() { return absl::GetCurrentTimeNanos(); }

}  // namespace

DecodeRunner::DecodeRunner(KvCacheManager* cache, kernels::ThreadPool* threads)
    : cache_(cache), threads_(threads) {}

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
    ASSIGN_OR_RETURN(const float* digests, cache_->Digests(seq_id, layer));
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
    args.digest_type = kernels::ScalarType::kF32;
    args.kind = policy->digest_kind();
    args.digest_capacity = n;
    args.page_indptr = indptr.data();
    args.digest_slots = digest_slots.data();
    args.total_pages = n;
    args.reduce = kernels::HeadReduce::kGroupSum;
    args.scores = row_scores_.data();
    RETURN_IF_ERROR(kernels::EstimateScoresCpu(args, threads_));
    // One ranking per layer: rows added in head order.
    scores_.assign(n, 0.0f);
    for (uint32_t r = 0; r < o.layout.n_kv_heads; ++r) {
      for (uint32_t i = 0; i < n; ++i) scores_[i] += row_scores_[size_t{r} * n + i];
    }
    view.scores = scores_;
  }
  const int64_t t1 = NowNs();
  absl::StatusOr<PagePlan> plan = policy->Plan(view);
  stats->times.estimate_ns += t1 - t0;
  stats->times.select_ns += NowNs() - t1;
  return plan;
}

absl::Status DecodeRunner::PrefillTokens(TokenPolicy* policy, uint64_t seq_id, uint32_t layer,
                                        const float* k, const float* v, uint32_t n,
                                        const float* last_q, StepStats* stats) {
  const KvCacheOptions& o = cache_->options();
  ASSIGN_OR_RETURN(LayerView view, cache_->View(seq_id, layer));
  const int64_t t0 = NowNs();
  std::vector<float> mass;
  PromptTokenMass(k, n, o.layout.n_kv_heads, o.n_q_heads, o.layout.head_dim, last_q, &mass);
  const int64_t t1 = NowNs();
  ASSIGN_OR_RETURN(std::vector<uint32_t> kept,
                   policy->SelectPrefill(seq_id, layer, view.budget_pages * view.page_size, mass));
  const int64_t t2 = NowNs();
  stats->times.estimate_ns += t1 - t0;
  stats->times.select_ns += t2 - t1;
  const size_t row = size_t{o.layout.n_kv_heads} * o.layout.head_dim;
  std::vector<float> kk(kept.size() * row), vv(kept.size() * row);
  for (size_t i = 0; i < kept.size(); ++i) {
    std::copy_n(k + kept[i] * row, row, &kk[i * row]);
    std::copy_n(v + kept[i] * row, row, &vv[i * row]);
  }
  absl::Status appended =
      cache_->AppendKv(seq_id, layer, kk.data(), vv.data(), static_cast<uint32_t>(kept.size()));
  stats->times.append_ns += NowNs() - t2;
  return appended;
}

absl::Status DecodeRunner::EvictAfterAttention(TokenPolicy* policy, uint64_t seq_id,
                                               uint32_t layer, const float* q, const float* lse,
                                               StepStats* stats) {
  const int64_t t0 = NowNs();
  ASSIGN_OR_RETURN(LayerView view, cache_->View(seq_id, layer));
  ASSIGN_OR_RETURN(uint32_t n_ids, cache_->TokenIdCount(seq_id));
  std::vector<float> mass;
  RETURN_IF_ERROR(CachedTokenMass(cache_->pool(layer), slots_, view.n_tokens,
                                  cache_->options().n_q_heads, q, lse, &mass));
  ASSIGN_OR_RETURN(std::vector<uint32_t> victims,
                   policy->AfterAttention(seq_id, layer, view.budget_pages * view.page_size,
                                          n_ids - 1, mass));
  absl::Status evicted = cache_->EvictTokens(seq_id, layer, victims);
  stats->times.select_ns += NowNs() - t0;
  return evicted;
}

absl::Status DecodeRunner::Prefill(uint64_t seq_id, uint32_t layer, const float* k,
                                   const float* v, uint32_t n, const float* last_q,
                                   StepStats* stats) {
  if (TokenPolicy* tp = cache_->policy()->AsTokenPolicy(); tp != nullptr) {
    return PrefillTokens(tp, seq_id, layer, k, v, n, last_q, stats);
  }
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
  const int64_t t0 = NowNs();
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
  const CacheCounters before = cache_->counters();
  int64_t t1 = NowNs();
  RETURN_IF_ERROR(cache_->ApplyPlan(seq_id, layer, plan));
  stats->times.recall_ns += NowNs() - t1;

  const KvCacheOptions& o = cache_->options();
  const size_t rows = o.n_q_heads;
  const size_t d = o.layout.head_dim;
  std::vector<float> own_lse;
  if (lse == nullptr) {
    own_lse.resize(rows);
    lse = own_lse.data();
  }
  if (recalled.empty()) {
    t1 = NowNs();
    absl::Status recall_status = cache_->FinishRecalls(seq_id, layer);
    stats->times.recall_ns += NowNs() - t1;
    RETURN_IF_ERROR(recall_status);
    t1 = NowNs();
    RETURN_IF_ERROR(Attend(seq_id, layer, q, ready, out, lse));
    stats->times.attention_ns += NowNs() - t1;
  } else {
    // states [rows][2][d]: state 0 over the ready pages, 1 over the recalled.
    partial_out_.assign(rows * 2 * d, 0.0f);
    partial_lse_.assign(rows * 2, 0.0f);
    std::vector<float> o0(rows * d), l0(rows), o1(rows * d), l1(rows);
    t1 = NowNs();
    RETURN_IF_ERROR(Attend(seq_id, layer, q, ready, o0.data(), l0.data()));
    stats->times.attention_ns += NowNs() - t1;
    t1 = NowNs();
    absl::Status recall_status = cache_->FinishRecalls(seq_id, layer);
    stats->times.recall_ns += NowNs() - t1;
    RETURN_IF_ERROR(recall_status);
    t1 = NowNs();
    RETURN_IF_ERROR(Attend(seq_id, layer, q, recalled, o1.data(), l1.data()));
    for (size_t r = 0; r < rows; ++r) {
      std::copy_n(&o0[r * d], d, &partial_out_[(r * 2) * d]);
      std::copy_n(&o1[r * d], d, &partial_out_[(r * 2 + 1) * d]);
      partial_lse_[r * 2] = l0[r];
      partial_lse_[r * 2 + 1] = l1[r];
    }
    kernels::MergeStatesArgs merge;
    merge.states_out = partial_out_.data();
    merge.states_lse = partial_lse_.data();
    merge.n_rows = static_cast<uint32_t>(rows);
    merge.n_states = 2;
    merge.head_dim = static_cast<uint32_t>(d);
    merge.out = out;
    merge.lse = lse;
    RETURN_IF_ERROR(kernels::MergeAttentionStatesCpu(merge, threads_));
    stats->times.attention_ns += NowNs() - t1;
  }
  stats->pages_recalled += cache_->counters().pages_recalled - before.pages_recalled;
  stats->bytes_recalled += cache_->counters().bytes_recalled - before.bytes_recalled;
  if (TokenPolicy* tp = cache_->policy()->AsTokenPolicy(); tp != nullptr) {
    // slots_ still lists every cached page: a token policy attends them all.
    return EvictAfterAttention(tp, seq_id, layer, q, lse, stats);
  }
  return absl::OkStatus();
}

absl::Status DecodeRunner::Attend(uint64_t seq_id, uint32_t layer, const float* q,
                                  const std::vector<int32_t>& pages, float* out, float* lse) {
  const KvCacheOptions& o = cache_->options();
  if (pages.empty()) {
    // Nothing to attend: the empty softmax state, which a merge ignores.
    std::fill_n(out, size_t{o.n_q_heads} * o.layout.head_dim, 0.0f);
    std::fill_n(lse, o.n_q_heads, -INFINITY);
    return absl::OkStatus();
  }
  int32_t last_len = 0;
  RETURN_IF_ERROR(cache_->AttentionPages(seq_id, layer, pages, &slots_, &last_len));
  const PagePool& pool = cache_->pool(layer);
  const int32_t indptr[2] = {0, static_cast<int32_t>(slots_.size())};
  kernels::DecodeAttentionArgs args;
  args.queries = q;
  args.query_type = kernels::ScalarType::kF32;
  args.batch = 1;
  args.n_q_heads = o.n_q_heads;
  args.sm_scale = 1.0f / std::sqrt(static_cast<float>(o.layout.head_dim));
  args.kv.pool = pool.base();
  args.kv.kv_type = static_cast<kernels::ScalarType>(o.layout.dtype);
  args.kv.page_size = o.layout.page_size;
  args.kv.n_kv_heads = o.layout.n_kv_heads;
  args.kv.head_dim = o.layout.head_dim;
  args.kv.page_stride_bytes = pool.page_bytes();
  args.kv.pool_pages = pool.capacity();
  args.kv.indptr = indptr;
  args.kv.indices = slots_.data();
  args.kv.last_page_len = &last_len;
  args.kv.total_entries = static_cast<uint32_t>(slots_.size());
  args.out = out;
  args.lse = lse;
  return kernels::DecodeAttentionCpu(args, threads_);
}

}  // namespace kvtier::worker
