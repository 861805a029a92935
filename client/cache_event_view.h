// NodePageView: the pages one node holds of the caller's key space, kept
// from that node's WatchCacheEvents stream (store.proto).
//
//   NodePageView view;
//   auto stream = client->WatchCacheEvents(view.ResumeRequest(layer));
//   v1::CacheEventBatch batch;
//   while (stream->Next(&batch)) RETURN_IF_ERROR(view.Apply(batch));
//   ... reconnect with view.ResumeRequest(layer): the node resumes, or
//   ... resets the view and sends a snapshot.
//
// Apply checks every batch before it changes anything: keys of 16 bytes,
// known kinds, only STORED inside a snapshot, a batch of another epoch
// only as a reset, a cursor that never goes back. A batch that fails is
// INVALID_ARGUMENT and leaves the view as it was; the caller drops the
// stream and reconnects (the node then sends a snapshot, since nothing it
// sends can be trusted to follow on).
//
// Thread-safety: not thread-safe; the caller serialises (PrefixRouter
// holds a lock around each view).
#ifndef KVTIER_CLIENT_CACHE_EVENT_VIEW_H_
#define KVTIER_CLIENT_CACHE_EVENT_VIEW_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/page_key.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::client {

class NodePageView {
 public:
  absl::Status Apply(const v1::CacheEventBatch& batch);

  // Whether the node holds page (hash, layer), as far as the events said.
  bool Holds(const Hash128& hash, uint32_t layer) const {
    return pages_.contains(PageKey{.tenant = 0, .hash = hash, .layer = layer});
  }
  // How many leading pages of `chain` the node holds in `layer`.
  uint32_t PrefixPages(absl::Span<const Hash128> chain, uint32_t layer) const;

  // A request that resumes after the last batch applied (or starts with a
  // snapshot), for pages of `layer` (every layer when unset).
  v1::WatchCacheEventsRequest ResumeRequest(std::optional<uint32_t> layer) const;
  // Forgets everything: the next stream starts with a snapshot.
  void Clear();

  // A snapshot has been applied in full, and the view follows the node.
  bool synced() const { return synced_; }
  const std::string& node_id() const { return node_id_; }
  size_t pages() const { return pages_.size(); }
  uint64_t epoch() const { return epoch_; }
  uint64_t next_seq() const { return next_seq_; }

 private:
  // Keys as the node sends them (tenant 0: the caller's own key space).
  absl::flat_hash_set<PageKey> pages_;
  std::string node_id_;
  uint64_t epoch_ = 0;
  uint64_t next_seq_ = 0;  // 0: no resumable cursor
  bool in_snapshot_ = false;
  bool synced_ = false;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_CACHE_EVENT_VIEW_H_
