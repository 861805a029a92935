#include "worker/policy/token_policy.h"

#include <algorithm>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/policy/token_attention.h"

namespace kvtier::worker {

absl::StatusOr<PagePlan> TokenPolicy::Plan(const LayerView& view) {
  PagePlan plan;
  plan.resident = AllPages(view.n_pages);
  plan.attend = plan.resident;
  return plan;
}

KvRows GatherKvRows(const float* k, const float* v, absl::Span<const uint32_t> rows,
                    uint32_t n_lists, const PageLayout& layout) {
  const size_t d = layout.head_dim;
  const size_t row = layout.n_kv_heads * d;
  KvRows out;
  out.count = static_cast<uint32_t>(rows.size() / n_lists);
  out.k.resize(out.count * row);
  out.v.resize(out.count * row);
  for (size_t i = 0; i < out.count; ++i) {
    for (uint32_t h = 0; h < layout.n_kv_heads; ++h) {
      const size_t from = rows[(n_lists == 1 ? 0 : size_t{h}) * out.count + i] * row + h * d;
      std::copy_n(k + from, d, &out.k[i * row + h * d]);
      std::copy_n(v + from, d, &out.v[i * row + h * d]);
    }
  }
  return out;
}

absl::StatusOr<std::vector<uint32_t>> TokenPolicy::SelectPrefill(uint64_t seq_id, uint32_t layer,
                                                                 uint32_t capacity,
                                                                 absl::Span<const float> mass,
                                                                 uint32_t n_lists) {
  if (capacity < 2) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(name()), ": capacity ", capacity,
                                                   " tokens leaves no room for a new token"));
  }
  if (n_lists == 0 || mass.size() % n_lists != 0) {
    return absl::InvalidArgumentError(absl::StrCat(std::string(name()), ": ", mass.size(),
                                                   " masses do not split into ", n_lists,
                                                   " lists"));
  }
  const uint32_t n = static_cast<uint32_t>(mass.size() / n_lists);
  std::vector<Slots>& lists = state_[{seq_id, layer}];
  lists.assign(n_lists, Slots());
  std::vector<uint32_t> positions;
  for (uint32_t l = 0; l < n_lists; ++l) {
    Slots all;
    all.position.resize(n);
    std::iota(all.position.begin(), all.position.end(), 0u);
    all.score.assign(n, 0.0f);
    Score(all, mass.subspan(size_t{l} * n, n));
    std::vector<uint8_t> evicted(n, 0);
    if (n > capacity - 1) {
      for (uint32_t s : Victims(all, capacity, n - (capacity - 1))) evicted[s] = 1;
    }
    Slots& kept = lists[l];
    for (uint32_t i = 0; i < n; ++i) {
      if (evicted[i]) continue;
      positions.push_back(i);
      kept.position.push_back(i);
      kept.score.push_back(all.score[i]);
    }
  }
  return positions;
}

absl::StatusOr<std::vector<uint32_t>> TokenPolicy::AfterAttention(uint64_t seq_id, uint32_t layer,
                                                                  uint32_t capacity,
                                                                  uint32_t position,
                                                                  absl::Span<const float> mass,
                                                                  uint32_t n_lists) {
  std::vector<Slots>& lists = state_[{seq_id, layer}];
  if (lists.size() != n_lists) {
    return absl::InternalError(absl::StrCat(std::string(name()), ": ", n_lists,
                                            " lists but the policy tracks ", lists.size()));
  }
  if (lists.empty()) return std::vector<uint32_t>{};
  // Every list tracks as many tokens; with this step's, n.
  const uint32_t n = static_cast<uint32_t>(lists[0].position.size()) + 1;
  if (mass.size() != size_t{n} * n_lists) {
    return absl::InternalError(absl::StrCat(std::string(name()), ": ", mass.size() / n_lists,
                                            " cached tokens but the policy tracks ", n));
  }
  std::vector<uint32_t> victims_by_list;
  for (uint32_t l = 0; l < n_lists; ++l) {
    Slots& slots = lists[l];
    slots.position.push_back(position);
    slots.score.push_back(0.0f);
    Score(slots, mass.subspan(size_t{l} * n, n));
    if (n <= capacity - 1) continue;
    std::vector<uint32_t> victims = Victims(slots, capacity, n - (capacity - 1));
    if (victims.size() != n - (capacity - 1)) {
      return absl::InternalError(absl::StrCat(std::string(name()), ": ", victims.size(),
                                              " victims where ", n - (capacity - 1),
                                              " must go"));
    }
    std::sort(victims.begin(), victims.end(), std::greater<uint32_t>());
    ApplySwapRemove(slots.position, victims);
    ApplySwapRemove(slots.score, victims);
    victims_by_list.insert(victims_by_list.end(), victims.begin(), victims.end());
  }
  return victims_by_list;
}

absl::Status TokenPolicy::RunPrefill(const TokenContext& ctx, const float* k, const float* v,
                                     uint32_t n, const float* queries, uint32_t n_queries) {
  const PageLayout& lay = ctx.cache->layout();
  const uint32_t n_q_heads = ctx.cache->n_q_heads();
  ASSIGN_OR_RETURN(LayerView view, ctx.cache->View(ctx.seq_id, ctx.layer));
  const float* last_q = queries + size_t{n_queries - 1} * n_q_heads * lay.head_dim;
  std::vector<float> mass;
  PromptTokenMass(k, n, lay.n_kv_heads, n_q_heads, lay.head_dim, last_q, per_kv_head(), &mass);
  ASSIGN_OR_RETURN(std::vector<uint32_t> kept,
                   SelectPrefill(ctx.seq_id, ctx.layer, view.budget_pages * view.page_size, mass,
                                 ListCount(lay)));
  const KvRows rows = GatherKvRows(k, v, kept, ListCount(lay), lay);
  return ctx.cache->AppendKv(ctx.seq_id, ctx.layer, rows.k.data(), rows.v.data(), rows.count);
}

absl::Status TokenPolicy::RunAfterAttention(const TokenContext& ctx, const float* q,
                                            const float* lse) {
  ASSIGN_OR_RETURN(LayerView view, ctx.cache->View(ctx.seq_id, ctx.layer));
  ASSIGN_OR_RETURN(uint32_t n_ids, ctx.cache->TokenIdCount(ctx.seq_id));
  const PageLayout& lay = ctx.cache->layout();
  std::vector<float> keys;
  RETURN_IF_ERROR(ctx.cache->ReadTokens(ctx.seq_id, ctx.layer, &keys, /*v=*/nullptr));
  std::vector<float> mass;
  RowTokenMass(keys.data(), view.n_tokens, lay.n_kv_heads, ctx.cache->n_q_heads(), lay.head_dim,
               q, lse, per_kv_head(), &mass);
  ASSIGN_OR_RETURN(std::vector<uint32_t> victims,
                   AfterAttention(ctx.seq_id, ctx.layer, view.budget_pages * view.page_size,
                                  n_ids - 1, mass, ListCount(lay)));
  if (!per_kv_head()) return ctx.cache->EvictTokens(ctx.seq_id, ctx.layer, victims);
  return ctx.cache->EvictHeadTokens(ctx.seq_id, ctx.layer, victims);
}

void TokenPolicy::EndSequence(uint64_t seq_id) {
  absl::erase_if(state_, [seq_id](const auto& entry) { return entry.first.first == seq_id; });
}

namespace {

// The `count` slots of `candidates` with the lowest score; ties evict the
// older token first.
std::vector<uint32_t> Lowest(std::vector<uint32_t> candidates, const std::vector<float>& score,
                             const std::vector<uint32_t>& position, uint32_t count) {
  std::stable_sort(candidates.begin(), candidates.end(), [&](uint32_t a, uint32_t b) {
    if (score[a] != score[b]) return score[a] < score[b];
    return position[a] < position[b];
  });
  candidates.resize(std::min<size_t>(count, candidates.size()));
  return candidates;
}

}  // namespace

absl::Status H2oOptions::Validate() const {
  if (!(recent_fraction >= 0.0 && recent_fraction <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("h2o recent_fraction ", recent_fraction, " not in [0, 1]"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<H2oPolicy>> H2oPolicy::Create(H2oOptions options) {
  RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<H2oPolicy>(new H2oPolicy(options));
}

void H2oPolicy::Score(Slots& slots, absl::Span<const float> mass) {
  for (size_t i = 0; i < mass.size(); ++i) slots.score[i] += mass[i];
}

std::vector<uint32_t> H2oPolicy::Victims(const Slots& slots, uint32_t capacity, uint32_t count) {
  const uint32_t n = static_cast<uint32_t>(slots.position.size());
  const uint32_t keep = capacity - 1;
  const uint32_t recent = static_cast<uint32_t>(options_.recent_fraction * keep);
  // The `recent` newest tokens are protected; victims come from the rest.
  std::vector<uint32_t> by_age(n);
  std::iota(by_age.begin(), by_age.end(), 0u);
  std::sort(by_age.begin(), by_age.end(), [&](uint32_t a, uint32_t b) {
    return slots.position[a] > slots.position[b];
  });
  std::vector<uint32_t> older(by_age.begin() + std::min(recent, n), by_age.end());
  return Lowest(std::move(older), slots.score, slots.position, count);
}

void TovaPolicy::Score(Slots& slots, absl::Span<const float> mass) {
  std::copy(mass.begin(), mass.end(), slots.score.begin());
}

std::vector<uint32_t> TovaPolicy::Victims(const Slots& slots, uint32_t, uint32_t count) {
  std::vector<uint32_t> all(slots.position.size());
  std::iota(all.begin(), all.end(), 0u);
  return Lowest(std::move(all), slots.score, slots.position, count);
}

}  // namespace kvtier::worker
