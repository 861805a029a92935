#include "worker/policy/page_state.h"

namespace kvtier::worker {

const char* PageStateName(PageState state) {
  switch (state) {
    case PageState::kFilling: return "filling";
    case PageState::kBackingUp: return "backing_up";
    case PageState::kResident: return "resident";
    case PageState::kEvictedBackingUp: return "evicted_backing_up";
    case PageState::kEvicted: return "evicted";
    case PageState::kRecalling: return "recalling";
    case PageState::kDropped: return "dropped";
    case PageState::kLost: return "lost";
  }
  return "unknown";
}

}  // namespace kvtier::worker
