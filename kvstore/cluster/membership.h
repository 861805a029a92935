// Membership: which nodes form the cluster, as each node and each client
// sees it (DESIGN: "Cluster").
//
// A node publishes one v1::Member record about itself; a Membership keeps
// the view of every node's record current and tells a listener about each
// change. Two sources:
//   - etcd (StartEtcdMembership): the record lives under `prefix + id`,
//     attached to a lease this node keeps alive; when the node dies or
//     freezes, etcd expires the lease and deletes the record, and every
//     watcher sees it go (the only failure detector is etcd's lease
//     expiry). A member whose record disappears stays in the view as
//     MEMBER_DOWN, so that placement can tell its pages need new homes.
//   - a static list (StartStaticMembership), for one node and for tests:
//     the view never changes except for this node's own state.
//
// Thread-safety: all methods are thread-safe.
#ifndef KVTIER_KVSTORE_CLUSTER_MEMBERSHIP_H_
#define KVTIER_KVSTORE_CLUSTER_MEMBERSHIP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::cluster {

struct MemberView {
  // etcd revision at which this view was published (the latest one seen
  // then; a larger one is newer); 0 for a static list.
  int64_t revision = 0;
  // Sorted by id, ids unique.
  std::vector<v1::Member> members;

  // The member with `id`, or null.
  const v1::Member* Find(const std::string& id) const;
};

// INVALID_ARGUMENT naming what is wrong: id 1..64 of [A-Za-z0-9._-],
// address 1..255 bytes of host:port, a state other than UNSPECIFIED.
absl::Status ValidateMember(const v1::Member& member);

// The states a node may publish about itself: JOINING, UP, DRAINING. DOWN is
// only ever inferred (the record vanished), never published.
bool IsSelfState(v1::MemberState state);

class Membership {
 public:
  virtual ~Membership() = default;

  // The current view; never null.
  virtual std::shared_ptr<const MemberView> View() const = 0;

  // This node's id.
  virtual const std::string& self_id() const = 0;

  // Publishes this node's new state (JOINING -> UP -> DRAINING). Returns
  // once the record is stored (etcd) and the view shows it.
  // INVALID_ARGUMENT unless IsSelfState(state); FAILED_PRECONDITION after
  // Leave; etcd: its error (UNAVAILABLE, ...) when the record could not be
  // stored, DEADLINE_EXCEEDED when it was stored but the view did not show
  // it within connect_timeout (the watch is reconnecting).
  virtual absl::Status SetSelfState(v1::MemberState state) = 0;

  // Called with every new view, from the membership's own thread (static
  // list: the thread calling SetSelfState), in order; replaces the previous
  // listener. A view is new when a member's record changed. Must not call
  // back into this object's SetListener, Leave or SetSelfState (which waits
  // for that thread).
  using Listener = std::function<void(std::shared_ptr<const MemberView>)>;
  virtual void SetListener(Listener listener) = 0;

  // Removes this node's record at once (etcd: revokes its lease) and stops
  // the background threads. Idempotent; the destructor calls it.
  virtual void Leave() = 0;
};

// `members` must be valid (ValidateMember), ids unique, and contain
// `self_id`; otherwise INVALID_ARGUMENT.
absl::StatusOr<std::unique_ptr<Membership>> StartStaticMembership(
    std::vector<v1::Member> members, const std::string& self_id);

struct EtcdMembershipOptions {
  // host:port of etcd's client endpoints (plaintext gRPC); tried in order
  // when one fails. At least one.
  std::vector<std::string> endpoints;
  // Key prefix of the member records: prefix + id. Default
  // "/kvtier/default/members/". Must start and end with '/'.
  std::string prefix = "/kvtier/default/members/";
  // Lease TTL: how long after its last keep-alive a silent node is declared
  // down. Default 10 s; whole seconds (etcd's unit) in [2 s, 300 s].
  // Keep-alives go every TTL/3.
  absl::Duration lease_ttl = absl::Seconds(10);
  // How long Start waits for etcd before failing (UNAVAILABLE); also the
  // deadline of each later etcd call. Default 5 s; must be positive.
  absl::Duration connect_timeout = absl::Seconds(5);
};

// Registers `self` under a fresh lease, reads the current view and starts
// watching. INVALID_ARGUMENT for bad options, an invalid `self` or one
// whose state is not IsSelfState. Records in etcd that do not parse, are
// invalid or whose key is not prefix + id are skipped (and logged). When
// etcd is unreachable later, the view stays as it was and the node keeps
// trying (every endpoint, with backoff); when its lease was lost meanwhile
// (etcd restarted without it, or the node froze longer than the TTL), it
// registers again under a new lease. Plaintext only: no TLS, no etcd auth.
absl::StatusOr<std::unique_ptr<Membership>> StartEtcdMembership(
    const EtcdMembershipOptions& options, v1::Member self);

}  // namespace kvtier::cluster

#endif  // KVTIER_KVSTORE_CLUSTER_MEMBERSHIP_H_
