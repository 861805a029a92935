// EtcdMembership: the Membership of StartEtcdMembership (membership.h).
// Private to kvstore/cluster.
//
// Two threads, each waiting at most TTL/3 or one etcd call (all bounded by
// connect_timeout but the watch, which Leave cancels):
//   keep-alive  renews the lease every TTL/3; when etcd says the lease is
//               gone, grants a new one and puts the record again.
//   watch       streams the prefix's events into the view; when the stream
//               breaks (etcd down, endpoint change, compaction), backs off,
//               reads the whole prefix again and watches from there.
//
// View rules: members sorted by id; a put replaces a member's entry; a
// delete, or a member missing from a re-read, turns its entry MEMBER_DOWN
// (it stays in the view). Records that do not parse, are invalid, or whose
// key is not prefix + id are skipped with a log line.
//
// Locking: publish_mu_ serialises what writes this node's record
// (SetSelfState, re-registration) and is held across the etcd call;
// listener_mu_ is held while the listener runs; mu_ guards the short-lived
// state. Order: publish_mu_, then listener_mu_, then mu_.
#ifndef KVTIER_KVSTORE_CLUSTER_ETCD_MEMBERSHIP_H_
#define KVTIER_KVSTORE_CLUSTER_ETCD_MEMBERSHIP_H_

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kvstore/cluster/etcd_client.h"
#include "kvstore/cluster/membership.h"

namespace kvtier::cluster {

// INVALID_ARGUMENT naming the option at fault.
absl::Status ValidateEtcdMembershipOptions(const EtcdMembershipOptions& options);

class EtcdMembership final : public Membership {
 public:
  // REQUIRES: `options` valid, `self` valid and IsSelfState(self.state()),
  // `self` stored under `lease_id`, `range` read after that.
  EtcdMembership(const EtcdMembershipOptions& options, v1::Member self,
                 std::unique_ptr<EtcdClient> client, int64_t lease_id, const EtcdRange& range);
  ~EtcdMembership() override;

  std::shared_ptr<const MemberView> View() const override;
  const std::string& self_id() const override { return self_id_; }
  absl::Status SetSelfState(v1::MemberState state) override;
  void SetListener(Listener listener) override;
  void Leave() override;

 private:
  void KeepAliveLoop();
  void WatchLoop(int64_t start_revision);

  // Grants a new lease and puts `record` under it, unless the lease is no
  // longer `stale_lease_id` (another caller re-registered already).
  // Returns the put's revision (0 when skipped).
  absl::StatusOr<int64_t> Register(const v1::Member& record, int64_t stale_lease_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(publish_mu_);

  // Watch-thread only (and the constructor, before it starts).
  void ApplyRange(const EtcdRange& range);
  void ApplyBatch(const EtcdWatchBatch& batch);
  // The member stored in `kv`, or nullopt (logged) when it is not one.
  std::optional<v1::Member> Decode(const EtcdKeyValue& kv) const;
  // Makes records_ the view at `revision` when it differs, then calls the
  // listener.
  void Publish(int64_t revision);

  // Waits until the view has seen `revision`, Leave, or connect_timeout.
  absl::Status AwaitRevision(int64_t revision);
  // Sleeps `duration` unless Leave comes first: false once leaving.
  bool SleepUnlessLeaving(absl::Duration duration);
  int64_t lease_id() const;
  bool leaving() const;

  // Const after construction.
  const std::string self_id_;
  const std::string prefix_;
  const std::string self_key_;
  const int64_t lease_ttl_s_;
  const absl::Duration call_timeout_;
  const std::unique_ptr<EtcdClient> client_;
  absl::once_flag leave_once_;

  absl::Mutex publish_mu_ ABSL_ACQUIRED_BEFORE(listener_mu_);
  // This node's record as last stored.
  v1::Member self_ ABSL_GUARDED_BY(publish_mu_);

  absl::Mutex listener_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  Listener listener_ ABSL_GUARDED_BY(listener_mu_);

  mutable absl::Mutex mu_;
  // Signalled on every applied revision and on Leave.
  absl::CondVar changed_;
  std::shared_ptr<const MemberView> view_ ABSL_GUARDED_BY(mu_);
  // The latest etcd revision the watch thread has applied (>= view_'s).
  int64_t applied_revision_ ABSL_GUARDED_BY(mu_) = 0;
  int64_t lease_id_ ABSL_GUARDED_BY(mu_);
  bool leaving_ ABSL_GUARDED_BY(mu_) = false;

  // Owned by the watch thread: every member seen, by id.
  std::map<std::string, v1::Member> records_;

  std::thread keep_alive_thread_;
  std::thread watch_thread_;
};

}  // namespace kvtier::cluster

#endif  // KVTIER_KVSTORE_CLUSTER_ETCD_MEMBERSHIP_H_
