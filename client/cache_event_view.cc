#include "client/cache_event_view.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "kvtier/v1/convert.h"

namespace kvtier::client {

absl::Status NodePageView::Apply(const v1::CacheEventBatch& batch) {
  if (batch.epoch() == 0) return absl::InvalidArgumentError("cache event batch: epoch 0");
  if (!batch.reset() && (epoch_ == 0 || batch.epoch() != epoch_)) {
    return absl::InvalidArgumentError(
        "cache event batch: a batch of a stream that did not begin with a reset");
  }
  const bool in_snapshot = batch.reset() || in_snapshot_;
  if (in_snapshot && !batch.snapshot_done() && batch.next_seq() != 0) {
    return absl::InvalidArgumentError("cache event batch: a cursor inside a snapshot");
  }
  if ((!in_snapshot || batch.snapshot_done()) && batch.next_seq() == 0) {
    return absl::InvalidArgumentError("cache event batch: no cursor after the snapshot");
  }
  if (!batch.reset() && !in_snapshot && batch.next_seq() < next_seq_) {
    return absl::InvalidArgumentError(absl::StrCat("cache event batch: cursor ", batch.next_seq(),
                                                   " goes back from ", next_seq_));
  }
  std::vector<std::pair<bool, PageKey>> changes;
  changes.reserve(batch.events_size());
  for (int i = 0; i < batch.events_size(); ++i) {
    const v1::CacheEvent& event = batch.events(i);
    const bool stored = event.kind() == v1::CacheEvent::STORED;
    if (!stored && event.kind() != v1::CacheEvent::REMOVED) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache event batch: event ", i, " has kind ", event.kind()));
    }
    if (!stored && in_snapshot) {
      return absl::InvalidArgumentError(
          absl::StrCat("cache event batch: event ", i, " removes a page inside a snapshot"));
    }
    absl::StatusOr<PageKey> key = v1::KeyFromProto(event.key(), "cache event key");
    if (!key.ok()) return key.status();
    changes.emplace_back(stored, *key);
  }

  if (batch.reset()) {
    pages_.clear();
    epoch_ = batch.epoch();
    node_id_ = batch.node_id();
    synced_ = false;
  }
  in_snapshot_ = in_snapshot && !batch.snapshot_done();
  for (const auto& [stored, key] : changes) {
    if (stored) {
      pages_.insert(key);
    } else {
      pages_.erase(key);
    }
  }
  next_seq_ = batch.next_seq();
  if (batch.snapshot_done()) synced_ = true;
  return absl::OkStatus();
}

uint32_t NodePageView::PrefixPages(absl::Span<const Hash128> chain, uint32_t layer) const {
  uint32_t n = 0;
  while (n < chain.size() && Holds(chain[n], layer)) ++n;
  return n;
}

v1::WatchCacheEventsRequest NodePageView::ResumeRequest(std::optional<uint32_t> layer) const {
  v1::WatchCacheEventsRequest request;
  if (synced_ && next_seq_ != 0) {
    request.set_epoch(epoch_);
    request.set_from_seq(next_seq_);
  }
  if (layer.has_value()) request.set_layer(*layer);
  return request;
}

void NodePageView::Clear() { *this = NodePageView(); }

}  // namespace kvtier::client
