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
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<QuestPolicy>> QuestPolicy::Create(QuestOptions options) {
  RETURN_IF_ERROR(options.Validate());
  return std::unique_ptr<QuestPolicy>(new QuestPolicy(options));
}

bool QuestPolicy::NeedsScores(const LayerView& view) const {
  return !view.prefill && view.layer >= options_.n_dense_layers &&
         view.n_pages > options_.page_budget;
}

absl::StatusOr<PagePlan> QuestPolicy::Plan(const LayerView& view) {
  PagePlan plan;
  plan.resident = AllPages(view.n_pages);
  if (!NeedsScores(view)) {
    plan.attend = plan.resident;
    return plan;
  }
  // Every page but the last is full, hence digested.
  const uint32_t others = view.n_pages - 1;
  if (view.scores.size() < others) {
    return absl::InvalidArgumentError("quest: scores missing for a sparse step");
  }
  if (!options_.per_kv_head) {
    ASSIGN_OR_RETURN(plan.attend,
                     TopKPages(view.scores.subspan(0, others), options_.page_budget - 1, 0, 0));
    plan.attend.push_back(static_cast<int32_t>(others));
    return plan;
  }
  const size_t rows = view.n_digested == 0 ? 0 : view.head_scores.size() / view.n_digested;
  if (rows == 0 || rows * view.n_digested != view.head_scores.size()) {
    return absl::InvalidArgumentError("quest: per-head scores missing for a sparse step");
  }
  std::vector<uint8_t> any(view.n_pages, 0);
  for (size_t r = 0; r < rows; ++r) {
    const auto row = view.head_scores.subspan(r * view.n_digested, others);
    ASSIGN_OR_RETURN(std::vector<int32_t> list,
                     TopKPages(row, options_.page_budget - 1, 0, 0));
    list.push_back(static_cast<int32_t>(others));
    for (int32_t p : list) any[p] = 1;
    plan.head_attend.push_back(std::move(list));
  }
  for (uint32_t p = 0; p < view.n_pages; ++p) {
    if (any[p]) plan.attend.push_back(static_cast<int32_t>(p));
  }
  return plan;
}

}  // namespace kvtier::worker
