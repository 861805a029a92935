// Replicator: a node's part in keeping pages where the member view places
// them (placement/placement.h: a page's R owners by rendezvous hashing over
// the up members).
//
// On each view whose set of up members differs from the last one handled,
// the node looks at the pages it holds and, for each page it owned under
// that last view, computes the page's owners before and after. The
// best-ranked former owner still up (or, when this node drains, this node)
// copies the page to each new owner that was not an owner before, with one
// ReplicaPut per peer, tenant and batch (store.proto; pinned pages arrive
// pinned until their pin here ends). Which pages:
//   - pinned ones, always: after a member dies they get their R copies
//     back, and a member that joins gets its share of them;
//   - every page, when this node itself is draining: it hands each page to
//     its new owners before it leaves;
//   - then, unless unpinned_bytes_per_s is 0, the unpinned ones, in the
//     background at that rate: a joiner gets its share and a dead member's
//     pages their second copy without waiting for reads. A newer view (or
//     the replicator's end) cuts this pass short; the next round plans
//     again from what is held then.
// Unpinned pages also move as they are read (ClusterClient's read repair).
//
// Work runs on the replicator's own thread; a view that arrives while it
// works is handled next (views in between are skipped: only the latest
// matters). Nothing is retried: a copy that fails is counted, and the next
// change of the view looks again.
//
// Thread-safety: thread-safe. The store must outlive the replicator.
#ifndef KVTIER_KVSTORE_CLUSTER_REPLICATOR_H_
#define KVTIER_KVSTORE_CLUSTER_REPLICATOR_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kvstore/cluster/membership.h"
#include "kvstore/core/store.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::cluster {

struct ReplicatorOptions {
  // Copies of each page (R), as the cluster's clients place them. Default 2;
  // range [1, 16].
  uint32_t replicas = 2;
  // Most pages per ReplicaPut. Default 64; range [1, 1024].
  uint32_t batch_pages = 64;
  // Page bytes per second the background pass over unpinned pages copies;
  // 0: unpinned pages move only when read. Default 128 MiB/s.
  uint64_t unpinned_bytes_per_s = uint64_t{128} << 20;
  // Stores a ReplicaPut at member `to` (peers/replica_sender.h dials the
  // peers). Called from the replicator's thread only. Required.
  std::function<absl::Status(const v1::Member& to, const v1::ReplicaPutRequest& request)> send;
};

struct ReplicatorStats {
  uint64_t rounds = 0;          // views handled that changed the up members
  uint64_t pages_copied = 0;    // copies stored at a new owner
  uint64_t copy_failures = 0;   // copies that failed (peer down, page gone)
  uint64_t unpinned_pages_copied = 0;  // of pages_copied: by the background pass
  uint64_t passes_cut_short = 0;       // background passes a newer view ended
};

class Replicator {
 public:
  // `baseline`: the view the node started with (nothing is copied for it).
  Replicator(store::Store* store, std::string self_id, std::shared_ptr<const MemberView> baseline,
             const ReplicatorOptions& options);
  ~Replicator();
  Replicator(const Replicator&) = delete;
  Replicator& operator=(const Replicator&) = delete;

  // A new view (Membership's listener); returns at once.
  void OnView(std::shared_ptr<const MemberView> view);

  // Waits until every view given so far is handled: true, or false when
  // `deadline` passed first.
  bool AwaitIdle(absl::Time deadline);

  ReplicatorStats stats() const;

 private:
  void Loop();
  // Copies what `after` asks of this node, given that `before` was handled.
  void Handle(const MemberView& before, const MemberView& after);
  // (target member id, tenant) -> the pages this node copies there.
  using Sends = std::map<std::pair<std::string, uint64_t>, std::vector<store::HeldPage>>;
  // The copies of `pages` that move from `before`'s owners to `after`'s
  // and that this node makes (`draining`: every page it owned).
  Sends Plan(const MemberView& before, const MemberView& after,
             const std::vector<store::HeldPage>& pages, bool draining) const;
  // The background pass over unpinned pages: `sends` paced at
  // unpinned_bytes_per_s, until done or superseded.
  void CopyUnpinned(const MemberView& after, const Sends& sends) ABSL_LOCKS_EXCLUDED(mu_);
  // One batch of one tenant's pages to `to`; returns the page bytes sent.
  uint64_t Copy(const v1::Member& to, uint64_t tenant, absl::Span<const store::HeldPage> pages,
                bool unpinned = false);

  // Const after construction.
  store::Store* const store_;
  const std::string self_id_;
  const ReplicatorOptions options_;

  mutable absl::Mutex mu_;
  // The last view handled, and the newest one waiting (null: none).
  std::shared_ptr<const MemberView> handled_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<const MemberView> pending_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  ReplicatorStats stats_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

}  // namespace kvtier::cluster

#endif  // KVTIER_KVSTORE_CLUSTER_REPLICATOR_H_
