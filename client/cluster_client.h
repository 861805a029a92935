// ClusterClient: the client of a kvtier cluster. It keeps the cluster's
// member view (from the Members RPC of any node it reaches) and sends each
// page straight to the members that hold it (placement/placement.h: the owner and
// replicas by rendezvous hashing of the page's chain hash over the up
// members), with one StoreClient per member.
//
//   ClusterOptions options;   // R = 2 replicas, W = 2 acknowledgements
//   ASSIGN_OR_RETURN(auto cluster, ClusterClient::Connect({"10.0.0.1:50051"}, options));
//   ASSIGN_OR_RETURN(auto outcomes, cluster->BatchPut(pages));
//   ASSIGN_OR_RETURN(ClusterLookupReply found, cluster->Lookup(chain, 0, n_layers));
//   ASSIGN_OR_RETURN(auto got, cluster->BatchGet(keys));
//
// Writes: every page goes to its R owners at once (one BatchPut per member,
// the members in parallel), and the put succeeds when W of them stored it.
// A member that fails with UNAVAILABLE or DEADLINE_EXCEEDED (down, or not
// yet known to be down) is skipped for the rest of the call and the pages
// it missed go to the next members in their ranking until each has W
// copies; any other error (a bad page, a quota) is returned as it is.
// With fewer up members than W, every up member must store the page.
//
// Reads fail over: a key asked of its owner that is missing there, lost, or
// whose owner fails is asked of its next replica, and so on through its R
// owners and then the draining and joining members (which may still hold
// pages placed on them under an earlier view). Read repair (read_repair):
// a page found is written, before BatchGet returns, to those of its R
// owners that lack it: the owners asked before the one that had it, and,
// for repair_window_ms after the set of up members changed (or after a
// first view that lists members not up), the owners not asked too (one
// Lookup per owner and layer finds which lack it).
// After a member died, joined or began draining, each page read moves to
// where the view places it. Lookup finds the longest
// prefix of a key chain stored anywhere in the cluster, asking each owner
// for all of its pages in one RPC per round (rounds run only for the pages
// still missing) and saying where each page lives.
//
// The view: refreshed every view_refresh_ms in the background and at once
// (at most every 100 ms) after a member failed; a reply with a lower etcd
// revision than the view's is ignored, so a node with a stale view cannot
// roll the client back.
//
// Pins and deletes reach every member that may hold a key: Pin pins each
// key on those of its R owners that hold it (ClusterPin keeps each member's
// pin id; when members change, the nodes' replicators copy pinned pages to
// their new owners, pinned), and Delete deletes every copy. Each
// StoreClient uses its member's data plane as usual.
//
// Thread-safety: thread-safe; one ClusterClient may be shared.
#ifndef KVTIER_CLIENT_CLUSTER_CLIENT_H_
#define KVTIER_CLIENT_CLUSTER_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "client/store_client.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::client {

struct ClusterOptions {
  // Options of each member's StoreClient. The defaults here are those of
  // ClientOptions except deadline_ms 5000 and max_attempts 2: a call to a
  // dead member should fail over soon, not retry for long.
  ClientOptions client = DefaultMemberOptions();
  // Copies of each page (R). Default 2; range [1, 16].
  uint32_t replicas = 2;
  // Copies stored before a put succeeds (W). Default 2; range [1, replicas].
  uint32_t write_quorum = 2;
  // How often the member view is refreshed in the background. Default
  // 1000 ms; range [10, 3,600,000].
  int64_t view_refresh_ms = 1000;
  // Puts place their first copy on this member when it is up (a worker's
  // own node, for its sequence's private pages). Default: none.
  std::string prefer_member_id{};
  // Write pages a read found away from their owners to those owners (see
  // above). Default true.
  bool read_repair = true;
  // How long after the up members changed reads also check the owners they
  // did not ask. Default 600,000 ms (10 min); range [0, 86,400,000].
  int64_t repair_window_ms = 600'000;

  static ClientOptions DefaultMemberOptions();
  // INVALID_ARGUMENT naming the first bad option.
  absl::Status Validate() const;
};

struct ClusterLookupReply {
  // Leading chain pages stored, with every requested layer, on some member.
  uint32_t prefix_pages = 0;
  // For every chain page: the id of a member that holds all its requested
  // layers, or empty when none was found (pages after the first gap are
  // reported only where a round happened to ask their holder).
  std::vector<std::string> holders;
};

// Counted since the client was created.
struct ClusterStats {
  // Calls to a member that failed with UNAVAILABLE or DEADLINE_EXCEEDED and
  // went on with the next member.
  uint64_t failovers = 0;
  // Pages read repair wrote to an owner that lacked them, and those it
  // could not write (the owner failed too; a later read tries again).
  uint64_t repaired_pages = 0;
  uint64_t repair_failures = 0;
};

// A pin across members: each member's own pin over the keys it holds.
struct ClusterPin {
  struct MemberPin {
    std::string member_id;
    std::string pin_id;
  };
  std::vector<MemberPin> pins;
};

class ClusterClient {
 public:
  // Reads the member view from the first of `seeds` (host:port) that
  // answers Members. UNAVAILABLE when none does; INVALID_ARGUMENT for bad
  // options or no seeds.
  static absl::StatusOr<std::unique_ptr<ClusterClient>> Connect(
      const std::vector<std::string>& seeds, const ClusterOptions& options);

  // One outcome per page, same order (already_present: the first member
  // that stored it had it already). UNAVAILABLE when a page could not get
  // W copies.
  absl::StatusOr<std::vector<PutOutcome>> BatchPut(absl::Span<const PutPage> pages);

  // One result per key, same order: OK from the first member that had it,
  // else NOT_FOUND (LOST when a member lost it and none had it).
  // UNAVAILABLE when no member that may hold a missing key answered.
  absl::StatusOr<std::vector<GotPage>> BatchGet(absl::Span<const PageKey> keys,
                                                uint64_t page_bytes_hint = 0);

  // layer_count 0 means 1. UNAVAILABLE when a page's every owner failed
  // before the prefix was settled.
  absl::StatusOr<ClusterLookupReply> Lookup(absl::Span<const Hash128> chain,
                                            uint32_t layer_begin = 0, uint32_t layer_count = 1);

  // Pins each key for ttl_ms on every one of its R owners that holds it (a
  // member that lacks some keys pins the others). NOT_FOUND when a key is
  // held by no owner that answered, UNAVAILABLE when none of its owners
  // answered, or a member's own error (INVALID_ARGUMENT, RESOURCE_EXHAUSTED,
  // ...): in each case every pin made here is released again.
  absl::StatusOr<ClusterPin> Pin(absl::Span<const PageKey> keys, uint64_t ttl_ms);
  // Releases each member's pin. Pins of members that are gone, or that
  // expired, are skipped (they end with their TTL); other errors are
  // returned after every member was asked.
  absl::Status Unpin(const ClusterPin& pin);
  // Deletes every copy of `keys` from the members that may hold them (their
  // R owners, then the draining and joining members); returns how many
  // copies were deleted. A member's error (FAILED_PRECONDITION for a pinned
  // page without `force`) is returned after every member was asked; members
  // that are down are skipped.
  absl::StatusOr<uint32_t> Delete(absl::Span<const PageKey> keys, bool force = false);

  // Asks the members for their view now. UNAVAILABLE when none answers.
  absl::Status RefreshView();
  // The current view: members sorted by id, and its etcd revision.
  v1::MembersResponse view() const;
  ClusterStats stats() const;
  // The StoreClient of member `id` (for per-member calls: Stats, Pin);
  // NOT_FOUND for an id not in the view.
  absl::StatusOr<std::shared_ptr<StoreClient>> member(const std::string& id);

  ~ClusterClient();

 private:
  struct View;
  ClusterClient(const ClusterOptions& options, std::vector<std::string> seeds);

  std::shared_ptr<const View> CurrentView() const;
  // After a member failed: refresh unless the last refresh was < 100 ms ago.
  void RefreshSoon();
  // The StoreClient for `member`, made on first use; a member whose address
  // changed gets a new one.
  absl::StatusOr<std::shared_ptr<StoreClient>> ClientFor(const v1::Member& member);
  void RefreshLoop();
  // After `member`'s call failed with `status`: a code that fails over
  // (down, or not yet known to be) marks it failed for this call, counts
  // it, and is OK (the call goes on); any other code is returned.
  absl::Status NoteFailure(const absl::Status& status, const v1::Member& member,
                           absl::flat_hash_set<std::string>* failed, absl::Status* last_failure);
  // Whether reads now check the owners they did not ask.
  bool InRepairWindow() const;
  // Asks each member of asked[i] by Lookup (one per member and layer)
  // whether it holds keys[i]: adds it to holding[i] or lacking[i] (either
  // may be null); members that do not answer go to neither.
  void Probe(absl::Span<const PageKey> keys,
             const std::vector<std::vector<const v1::Member*>>& asked,
             std::vector<std::vector<const v1::Member*>>* holding,
             std::vector<std::vector<const v1::Member*>>* lacking);
  // Releases `pins`, ignoring errors (an error path's clean-up).
  void ReleaseQuietly(const ClusterPin& pins);
  // Writes page i of `pages` to each member of repair[i] (read repair).
  void Repair(const std::vector<GotPage>& pages,
              const std::vector<std::vector<const v1::Member*>>& repair);

  // Const after construction.
  const ClusterOptions options_;
  const std::vector<std::string> seeds_;

  mutable absl::Mutex mu_;
  std::shared_ptr<const View> view_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::shared_ptr<StoreClient>> clients_ ABSL_GUARDED_BY(mu_);
  absl::Time last_refresh_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // When the set of up members last changed (InfinitePast: not since the
  // first view).
  absl::Time up_changed_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();

  std::atomic<uint64_t> failovers_{0};
  std::atomic<uint64_t> repaired_pages_{0};
  std::atomic<uint64_t> repair_failures_{0};

  absl::Notification stop_;
  std::thread refresher_;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_CLUSTER_CLIENT_H_
