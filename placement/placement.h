// Placement: which members hold a page, by rendezvous (highest random
// weight) hashing of its chain hash over the members that take pages.
//
// Every member scores every page, score = XXH3-64 of the page's canonical
// hash seeded with XXH3-64 of the member's id; the highest-scoring members
// hold it, the first as owner and the next R-1 as replicas. A member that
// joins or leaves moves only the pages it wins or held (about 1/N of them),
// and every client and node that sees the same view computes the same
// owners without asking anyone.
//
// Pages are placed by their chain hash alone, not their layer, so a page's
// layers live together and one Lookup per owner answers for all of them.
//
// Thread-safety: immutable after construction; share freely.
#ifndef KVTIER_PLACEMENT_PLACEMENT_H_
#define KVTIER_PLACEMENT_PLACEMENT_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/types/span.h"
#include "common/page_key.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::placement {

// The rendezvous score of `hash` on the member with `id`.
uint64_t RendezvousScore(std::string_view id, const Hash128& hash);

class Placement {
 public:
  // Places pages over the members of `members` in state MEMBER_UP; the
  // others are listed too (readable(), for reads that fall back to a
  // draining or joining member) but own nothing.
  explicit Placement(absl::Span<const v1::Member> members);

  // Members that take pages (MEMBER_UP), in the order given.
  size_t size() const { return up_.size(); }
  const v1::Member& member(size_t i) const { return up_[i].member; }

  // The up to `count` members (indices for member()) that hold `hash`,
  // best first. With a non-empty `prefer_id` naming an up member, that
  // member comes first and the rest follow by score (a worker's own node
  // for its sequence's private pages).
  std::vector<size_t> Owners(const Hash128& hash, size_t count,
                             std::string_view prefer_id = {}) const;

  // The members in state DRAINING or JOINING: they may still hold pages
  // placed on them under an earlier view.
  const std::vector<v1::Member>& others() const { return others_; }

 private:
  struct Up {
    v1::Member member;
    uint64_t seed;
  };
  std::vector<Up> up_;
  std::vector<v1::Member> others_;
};

}  // namespace kvtier::placement

#endif  // KVTIER_PLACEMENT_PLACEMENT_H_
