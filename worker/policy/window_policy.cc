#include "worker/policy/window_policy.h"

namespace kvtier::worker {

absl::StatusOr<PagePlan> FullCachePolicy::Plan(const LayerView& view) {
  PagePlan plan;
  plan.resident = AllPages(view.n_pages);
  plan.attend = plan.resident;
  return plan;
}

absl::StatusOr<PagePlan> WindowPolicy::Plan(const LayerView& view) {
  // Residency is settled at append time; a step only reads what is there.
  PagePlan plan;
  plan.resident = ResidentPages(view);
  plan.attend = plan.resident;
  return plan;
}

int32_t WindowPolicy::AppendVictim(const LayerView& view) {
  for (uint32_t p = options_.n_sink_pages; p < view.n_pages; ++p) {
    if (IsResident(view.states[p]) && view.states[p] != PageState::kFilling) {
      return static_cast<int32_t>(p);
    }
  }
  return -1;
}

}  // namespace kvtier::worker
