#include "worker/policy/quest_policy.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier::worker {

absl::Status QuestOptions::Validate() const {
  if (page_budget < 2) {
    return absl::InvalidArgumentError(absl::StrCat("page_budget ", page_budget, " below 2"));
  }
  if (offload && (exact_scores || rerank > 0)) {
    return absl::InvalidArgumentError(
        "quest: exact scores read every page, so they cannot offload");
  }
  if (offload && per_kv_head) {
    return absl::InvalidArgumentError(
        "quest: per-KV-head lists cannot offload (their union can exceed the budget)");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<QuestPolicy>> QuestPolicy::Create(QuestOptions options) {
  RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<QuestPolicy>(new QuestPolicy(options));
}

uint32_t QuestPolicy::Attended(const LayerView& view) const {
  return options_.offload ? view.budget_pages : options_.page_budget;
}

uint32_t QuestPolicy::rerank_candidates(const LayerView& view) const {
  return options_.exact_scores ? view.n_digested : options_.rerank * (Attended(view) - 1);
}

bool QuestPolicy::NeedsScores(const LayerView& view) const {
  // Offloading, the prefill's plan must choose what stays resident.
  return (!view.prefill || options_.offload) && view.layer >= options_.n_dense_layers &&
         view.n_pages > Attended(view);
}

absl::StatusOr<PagePlan> QuestPolicy::Plan(const LayerView& view) {
  PagePlan plan;
  if (!NeedsScores(view)) {
    plan.resident = AllPages(view.n_pages);
    plan.attend = plan.resident;
    return plan;
  }
  const uint32_t attended = Attended(view);
  if (attended < 2) {
    return absl::InvalidArgumentError(
        absl::StrCat("quest: a budget of ", attended, " pages is below 2"));
  }
  // Every page but the last is full, hence digested.
  const uint32_t others = view.n_pages - 1;
  if (view.scores.size() < others) {
    return absl::InvalidArgumentError("quest: scores missing for a sparse step");
  }
  if (!options_.per_kv_head) {
    ASSIGN_OR_RETURN(plan.attend,
                     TopKPages(view.scores.subspan(0, others), attended - 1, 0, 0));
    plan.attend.push_back(static_cast<int32_t>(others));
    plan.resident = options_.offload ? plan.attend : AllPages(view.n_pages);
    return plan;
  }
  // Per-head lists never offload (QuestOptions::Validate).
  plan.resident = AllPages(view.n_pages);
  const size_t rows = view.n_digested == 0 ? 0 : view.head_scores.size() / view.n_digested;
  if (rows == 0 || rows * view.n_digested != view.head_scores.size()) {
    return absl::InvalidArgumentError("quest: per-head scores missing for a sparse step");
  }
  std::vector<uint8_t> any(view.n_pages, 0);
  for (size_t r = 0; r < rows; ++r) {
    const auto row = view.head_scores.subspan(r * view.n_digested, others);
    ASSIGN_OR_RETURN(std::vector<int32_t> list,
                     TopKPages(row, attended - 1, 0, 0));
    list.push_back(static_cast<int32_t>(others));
    for (int32_t p : list) any[p] = 1;
    plan.head_attend.push_back(std::move(list));
  }
  for (uint32_t p = 0; p < view.n_pages; ++p) {
    if (any[p]) plan.attend.push_back(static_cast<int32_t>(p));
  }
  return plan;
}

int32_t QuestPolicy::AppendVictim(const LayerView& view) {
  // Without offload every page stays, so its budget covers the context;
  // dense layers likewise.
  if (!options_.offload || view.layer < options_.n_dense_layers) return -1;
  // The next plan re-chooses every page, so the slot goes to the oldest
  // resident full page (no page is worth more before the query is known).
  for (uint32_t p = 0; p < view.n_pages; ++p) {
    if (IsResident(view.states[p]) && view.states[p] != PageState::kFilling) {
      return static_cast<int32_t>(p);
    }
  }
  return -1;
}

}  // namespace kvtier::worker
