// ClusterPageStore: the PageStoreBackend over a kvtier cluster
// (client/cluster_client.h), for workers whose pages and prefixes live on
// many nodes: each page goes to (and is read from) its owners wherever the
// worker's seed node is, so a prefix written through one node is found and
// loaded through any other.
//
// Pins span members (ClusterClient::Pin gives one pin per member that
// holds the keys); this backend hands the worker one opaque 16-byte id per
// pin and keeps the members' pins behind it until Unpin or their TTL ends
// (expired records are forgotten at the next Pin).
//
// Thread-safety: thread-safe (the cluster client is).
#ifndef KVTIER_WORKER_TRANSFER_CLUSTER_PAGE_STORE_H_
#define KVTIER_WORKER_TRANSFER_CLUSTER_PAGE_STORE_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/cluster_client.h"
#include "worker/transfer/page_store.h"

namespace kvtier::worker {

class ClusterPageStore : public PageStoreBackend {
 public:
  // A store over a cluster client of its own, seeded with `seeds`; the
  // client's errors (UNAVAILABLE when no seed answers).
  static absl::StatusOr<std::unique_ptr<ClusterPageStore>> Connect(
      const std::vector<std::string>& seeds, const client::ClusterOptions& options = {});
  // `cluster` must outlive this object.
  explicit ClusterPageStore(client::ClusterClient* cluster) : cluster_(cluster) {}

  // Every page reaches W of its owners, or the call fails.
  absl::Status Put(absl::Span<const StoredPage> pages) override;
  absl::StatusOr<std::vector<FetchedPage>> Get(absl::Span<const PageKey> keys) override;
  absl::StatusOr<std::string> Pin(absl::Span<const PageKey> keys, uint64_t ttl_ms,
                                  std::string_view pin_id) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status Unpin(std::string_view pin_id) override ABSL_LOCKS_EXCLUDED(mu_);
  // The longest prefix stored anywhere in the cluster over [0, n_layers).
  absl::StatusOr<uint32_t> LookupPrefix(absl::Span<const Hash128> chain,
                                        uint32_t n_layers) override;

 private:
  struct PinRecord {
    std::vector<client::ClusterPin> pins;  // one per Pin call that made or extended it
    absl::Time expiry;
  };

  std::unique_ptr<client::ClusterClient> owned_;  // set by Connect
  client::ClusterClient* const cluster_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, PinRecord> pins_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_TRANSFER_CLUSTER_PAGE_STORE_H_
