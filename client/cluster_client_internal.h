// ClusterClient's private pieces, shared by its files (cluster_client.cc:
// view, routing, reads and writes; cluster_client_pins.cc: pins and
// deletes). Not for other users.
#ifndef KVTIER_CLIENT_CLUSTER_CLIENT_INTERNAL_H_
#define KVTIER_CLIENT_CLUSTER_CLIENT_INTERNAL_H_

#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/cluster_client.h"
#include "placement/placement.h"

namespace kvtier::client {

struct ClusterClient::View {
  explicit View(v1::MembersResponse reply)
      : response(std::move(reply)),
        members(response.members().begin(), response.members().end()),
        placement(members) {}

  // Up to `owners` up members that hold `hash`, best first, then (when
  // `with_others`) the draining and joining members.
  std::vector<const v1::Member*> Candidates(const Hash128& hash, size_t owners,
                                            std::string_view prefer, bool with_others) const {
    std::vector<const v1::Member*> out;
    for (size_t i : placement.Owners(hash, owners, prefer)) out.push_back(&placement.member(i));
    if (with_others) {
      for (const v1::Member& other : placement.others()) out.push_back(&other);
    }
    return out;
  }

  // The member with `id`, or null.
  const v1::Member* Find(const std::string& id) const {
    for (const v1::Member& member : members) {
      if (member.id() == id) return &member;
    }
    return nullptr;
  }

  // The ids of the members that take pages, in view order.
  std::vector<std::string> UpIds() const {
    std::vector<std::string> ids;
    for (size_t i = 0; i < placement.size(); ++i) ids.push_back(placement.member(i).id());
    return ids;
  }

  const v1::MembersResponse response;
  const std::vector<v1::Member> members;
  const placement::Placement placement;
};

namespace cluster_internal {

// A member that answers these is down or unreachable (or not yet known to
// be down): the call goes on with the next member.
inline bool FailsOver(const absl::Status& status) {
  return absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status);
}

inline absl::Status WithMember(const absl::Status& status, const v1::Member& member) {
  return absl::Status(status.code(), absl::StrCat("member ", member.id(), " (", member.address(),
                                                  "): ", status.message()));
}

// Runs fn(0) .. fn(n - 1), each on a thread of its own when n > 1.
template <typename Fn>
void RunEach(size_t n, Fn fn) {
  if (n == 1) {
    fn(0);
    return;
  }
  std::vector<std::thread> threads;
  threads.reserve(n);
  for (size_t i = 0; i < n; ++i) threads.emplace_back([&fn, i] { fn(i); });
  for (std::thread& thread : threads) thread.join();
}

// Items grouped by the member they go to next, in first-seen order.
struct Groups {
  std::vector<const v1::Member*> members;
  std::vector<std::vector<size_t>> items;

  void Add(const v1::Member* member, size_t item) {
    for (size_t g = 0; g < members.size(); ++g) {
      if (members[g]->id() == member->id()) {
        items[g].push_back(item);
        return;
      }
    }
    members.push_back(member);
    items.push_back({item});
  }
};

}  // namespace cluster_internal
}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_CLUSTER_CLIENT_INTERNAL_H_
