#include "worker/policy/arkvale_policy.h"

#include <algorithm>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier::worker {

absl::Status ArkvaleOptions::Validate() const {
  if (n_win_pages < 2) {
    return absl::InvalidArgumentError(absl::StrCat("n_win_pages ", n_win_pages, " below 2"));
  }
  if (topk_pages != 0 && topk_pages < n_sink_pages + n_win_pages) {
    return absl::InvalidArgumentError(absl::StrCat("topk_pages ", topk_pages,
                                                   " below sink + window pages ",
                                                   n_sink_pages + n_win_pages));
  }
  if (digest_kind != kernels::DigestKind::kArkvaleMean &&
      digest_kind != kernels::DigestKind::kMinMax &&
      digest_kind != kernels::DigestKind::kCentroid) {
    return absl::InvalidArgumentError("unknown digest kind");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ArkvalePolicy>> ArkvalePolicy::Create(ArkvaleOptions options) {
  RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<ArkvalePolicy>(new ArkvalePolicy(options));
}

uint32_t ArkvalePolicy::TopK(uint32_t budget_pages) const {
  return options_.topk_pages != 0 ? options_.topk_pages : budget_pages / 2;
}

bool ArkvalePolicy::Dense(const LayerView& view) const {
  return view.layer < options_.n_unlimited_layers || view.n_pages <= view.budget_pages;
}

bool ArkvalePolicy::NeedsScores(const LayerView& view) const { return !Dense(view); }

absl::StatusOr<PagePlan> ArkvalePolicy::Plan(const LayerView& view) {
  PagePlan plan;
  if (Dense(view)) {
    plan.resident = AllPages(view.n_pages);
    plan.attend = plan.resident;
    return plan;
  }
  const uint32_t n = view.n_pages;
  const uint32_t ns = options_.n_sink_pages;
  const uint32_t nw = options_.n_win_pages;
  const uint32_t budget = view.budget_pages;
  const uint32_t topk = TopK(budget);
  if (topk >= budget || topk < ns + nw) {
    return absl::InvalidArgumentError(absl::StrCat("arkvale: top-k ", topk, " must be in [",
                                                   ns + nw, ", budget ", budget, ")"));
  }
  if (view.scores.size() != view.n_digested) {
    return absl::InvalidArgumentError("arkvale: scores missing for a budgeted layer");
  }
  // k_eff = topk - ns - (nw - 1) pages win besides sinks and window; at
  // prefill the whole remaining budget goes to the best pages.
  const uint32_t k_eff = view.prefill ? budget - ns - nw : topk - ns - (nw - 1);
  const uint32_t win_begin = n - nw;
  const uint32_t digested_in_window = view.n_digested > win_begin ? view.n_digested - win_begin : 0;
  ASSIGN_OR_RETURN(std::vector<int32_t> winners,
                   TopKPages(view.scores, ns + k_eff + digested_in_window, ns, digested_in_window));
  std::vector<uint8_t> keep(n, 0);
  for (int32_t p : winners) keep[p] = 1;
  for (uint32_t p = 0; p < std::min(ns, n); ++p) keep[p] = 1;
  for (uint32_t p = win_begin; p < n; ++p) keep[p] = 1;
  uint32_t kept = static_cast<uint32_t>(std::count(keep.begin(), keep.end(), 1));
  // Fill the rest of the budget with the best pages already resident, so
  // only the lowest-scoring resident candidates make room for recalls.
  std::vector<int32_t> others;
  for (uint32_t p = 0; p < n; ++p) {
    if (!keep[p] && HoldsSlot(view.states[p])) others.push_back(static_cast<int32_t>(p));
  }
  std::stable_sort(others.begin(), others.end(), [&](int32_t a, int32_t b) {
    return RankedScore(view.scores[a]) > RankedScore(view.scores[b]);
  });
  for (int32_t p : others) {
    if (kept >= budget) break;
    keep[p] = 1;
    ++kept;
  }
  for (uint32_t p = 0; p < n; ++p) {
    if (keep[p]) plan.resident.push_back(static_cast<int32_t>(p));
  }
  plan.attend = plan.resident;
  return plan;
}

int32_t ArkvalePolicy::AppendVictim(const LayerView& view) {
  // Unlimited layers must be given a budget that covers the context.
  if (view.layer < options_.n_unlimited_layers) return -1;
  const uint32_t n = view.n_pages;
  const uint32_t ns = options_.n_sink_pages;
  const uint32_t nw = options_.n_win_pages;
  auto evictable = [&](uint32_t p) {
    return p >= ns && p < n && IsResident(view.states[p]) && view.states[p] != PageState::kFilling;
  };
  // After the new page opens, the window is [n + 1 - nw, n].
  if (n >= nw && evictable(n - nw)) return static_cast<int32_t>(n - nw);
  for (uint32_t p = ns; p + nw <= n; ++p) {
    if (evictable(p)) return static_cast<int32_t>(p);
  }
  return -1;
}

}  // namespace kvtier::worker
