#include "worker/policy/quest_policy.h"

#include <algorithm>

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
  ASSIGN_OR_RETURN(plan.attend,
                   TopKPages(view.scores.subspan(0, others), options_.page_budget - 1, 0, 0));
  plan.attend.push_back(static_cast<int32_t>(others));
  return plan;
}

}  // namespace kvtier::worker
