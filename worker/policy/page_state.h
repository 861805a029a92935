// PageState: where one (sequence, layer, page) lives and what is in flight
// for it. Every transfer a page takes part in is visible in its state.
//
//   kFilling ──full──> kBackingUp ──put ok──> kResident
//      (partial,          │  (resident,          │ (resident, stored copy
//       resident)         │   put in flight)     │  if the policy offloads)
//                       evict                  evict
//                         v                      v
//               kEvictedBackingUp ──put ok──> kEvicted ──recall──> kRecalling
//                 (bytes live only in            (stored only)   (get in flight,
//                  the put transfer)                              slot reserved)
//   kRecalling ──get ok──> kResident
//   kRecalling ──get failed (store down, deadline)──> kEvicted (error returned)
//   kRecalling / kEvicted* ──store lost it──> kLost (recomputed, or error)
//   kResident ──evict, policy keeps no copy──> kDropped (gone for good)
#ifndef KVTIER_WORKER_POLICY_PAGE_STATE_H_
#define KVTIER_WORKER_POLICY_PAGE_STATE_H_

#include <cstdint>

namespace kvtier::worker {

enum class PageState : uint8_t {
  kFilling,
  kBackingUp,
  kResident,
  kEvictedBackingUp,
  kEvicted,
  kRecalling,
  kDropped,
  kLost,
};

const char* PageStateName(PageState state);

// Whether a page in `state` occupies a pool slot.
inline bool HoldsSlot(PageState state) {
  return state == PageState::kFilling || state == PageState::kBackingUp ||
         state == PageState::kResident || state == PageState::kRecalling;
}

// Whether the page's bytes can be read from its slot now.
inline bool IsResident(PageState state) {
  return state == PageState::kFilling || state == PageState::kBackingUp ||
         state == PageState::kResident;
}

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_PAGE_STATE_H_
