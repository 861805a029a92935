// PrefixRouter: where a prompt's prefix lives in a cluster, known without
// asking: it follows every member's WatchCacheEvents stream (one layer of
// the caller's key space) and answers from memory, so a frontend's router
// can send each request to the node that already holds the longest part
// of its prefix.
//
//   ASSIGN_OR_RETURN(auto cluster, ClusterClient::Connect(seeds, options));
//   PrefixRouter router(cluster.get(), PrefixRouterOptions{.layer = 0});
//   std::vector<NodePrefix> where = router.Locate(chain);  // longest first
//
// One thread per member reads its stream into a NodePageView and, when the
// stream breaks, reconnects (after retry_interval) resuming from its
// cursor; the member sends a snapshot instead when it cannot resume (a
// restart, a cursor past its log). A batch that fails NodePageView's
// checks drops the view and starts over from a snapshot. A thread follows
// the member view (ClusterClient::view) every member_poll and starts or
// stops watchers as members come and go; members that are down are
// dropped.
//
// The answer is as fresh as the events: a page a node stored a moment ago
// may not be known yet (a batch goes out about every 10 ms), so a router
// treats it as a hint and the worker still looks the prefix up.
//
// Thread-safety: thread-safe. The ClusterClient must outlive the router.
#ifndef KVTIER_CLIENT_PREFIX_ROUTER_H_
#define KVTIER_CLIENT_PREFIX_ROUTER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/cache_event_view.h"
#include "client/cluster_client.h"

namespace kvtier::client {

struct PrefixRouterOptions {
  // The layer whose pages stand for a chain page.
  uint32_t layer = 0;
  absl::Duration member_poll = absl::Seconds(1);
  absl::Duration retry_interval = absl::Milliseconds(500);
};

struct NodePrefix {
  std::string node_id;
  uint32_t prefix_pages = 0;

  friend bool operator==(const NodePrefix&, const NodePrefix&) = default;
};

// How the router's streams fared, since it started.
struct PrefixRouterStats {
  uint32_t members = 0;         // watched now
  uint32_t synced_members = 0;  // with a complete snapshot
  uint64_t batches = 0;
  uint64_t events = 0;
  uint64_t snapshots = 0;        // resets applied
  uint64_t reconnects = 0;       // streams opened after the first
  uint64_t rejected_batches = 0;  // failed NodePageView's checks
};

class PrefixRouter {
 public:
  PrefixRouter(ClusterClient* cluster, const PrefixRouterOptions& options);
  ~PrefixRouter();
  PrefixRouter(const PrefixRouter&) = delete;
  PrefixRouter& operator=(const PrefixRouter&) = delete;

  // Each synced member's longest held prefix of `chain` (at least one
  // page), longest first, ties by id. Empty when no member holds its first
  // page.
  std::vector<NodePrefix> Locate(absl::Span<const Hash128> chain) const ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until every member in the view is synced, or `timeout`; whether
  // they were.
  bool AwaitSynced(absl::Duration timeout) const ABSL_LOCKS_EXCLUDED(mu_);

  PrefixRouterStats stats() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Watcher;

  void FollowMembers() ABSL_LOCKS_EXCLUDED(mu_);
  // Starts watchers for members up or draining, stops the others.
  void Reconcile(const v1::MembersResponse& view) ABSL_LOCKS_EXCLUDED(mu_);
  void Watch(Watcher* watcher) ABSL_LOCKS_EXCLUDED(mu_);
  bool AllSynced() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ClusterClient* const cluster_;
  const PrefixRouterOptions options_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<Watcher>> watchers_ ABSL_GUARDED_BY(mu_);
  PrefixRouterStats stats_ ABSL_GUARDED_BY(mu_);
  absl::Notification stop_;
  std::thread follower_;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_PREFIX_ROUTER_H_
