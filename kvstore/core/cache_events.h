// CacheEventLog: the pages a node stored and removed, in the order the
// store changed, for the routers that watch them (WatchCacheEvents in
// proto/kvtier/v1/store.proto, kvstore/service/cache_event_feed.h).
//
//   CacheEventLog log(1 << 18);
//   options.events = &log;                      // the store appends to it
//   CacheEventLog::Slice s = log.Read(cursor, tenant, std::nullopt, 1024);
//   if (s.lost) ... resynchronise from a snapshot (Store::HeldPages) ...
//   cursor = s.next_seq;
//
// A page is stored when a put commits it (a duplicate put is no event) and
// removed when it leaves the node: deleted, dropped from the last tier it
// was in, or lost to a failed checksum. Moving between RAM and disk is no
// event: the node still holds the page. Pages found on disk at Open are no
// events either; a watcher learns them from a snapshot.
//
// Events are numbered from 1 with no gaps (`seq`). The log keeps the last
// `capacity` events; a reader whose cursor fell behind them is told so
// (Slice::lost) and starts again from a snapshot. Each log has a random
// nonzero epoch, so a cursor of another log (a restarted server) is told
// from one of this log.
//
// Snapshot consistency: the store appends under its own lock, in the same
// step as the change. So a reader that takes `next_seq()` first, then a
// snapshot of the pages held, then replays the events from that sequence
// number in order, ends with exactly the pages the node holds.
//
// Thread-safety: thread-safe. Append is O(1) under the log's own mutex.
#ifndef KVTIER_KVSTORE_CORE_CACHE_EVENTS_H_
#define KVTIER_KVSTORE_CORE_CACHE_EVENTS_H_

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "common/page_key.h"

namespace kvtier::store {

struct CacheEvent {
  enum class Kind : uint8_t { kStored = 1, kRemoved = 2 };
  uint64_t seq = 0;
  Kind kind = Kind::kStored;
  PageKey key;

  friend bool operator==(const CacheEvent&, const CacheEvent&) = default;
};

class CacheEventLog {
 public:
  // Keeps the last `capacity` events (at least 1).
  explicit CacheEventLog(size_t capacity);
  CacheEventLog(const CacheEventLog&) = delete;
  CacheEventLog& operator=(const CacheEventLog&) = delete;

  size_t capacity() const { return capacity_; }
  // Random, nonzero, fixed for the log's life.
  uint64_t epoch() const { return epoch_; }
  // The sequence number the next event gets (1 for an empty log).
  uint64_t next_seq() const { return next_seq_.load(std::memory_order_acquire); }
  // The smallest sequence number still kept (next_seq() when empty).
  uint64_t oldest_seq() const;

  void Append(CacheEvent::Kind kind, const PageKey& key) ABSL_LOCKS_EXCLUDED(mu_);
  // One event per key, numbered consecutively.
  void AppendAll(CacheEvent::Kind kind, absl::Span<const PageKey> keys) ABSL_LOCKS_EXCLUDED(mu_);

  struct Slice {
    // Events from the cursor on were overwritten (or the cursor is past
    // next_seq()): nothing else is set, and the reader must resynchronise.
    bool lost = false;
    // `tenant`'s events (of `layer`, when given) in order.
    std::vector<CacheEvent> events;
    // Where the next Read resumes: past every event looked at, matching
    // or not.
    uint64_t next_seq = 0;
  };
  // `tenant`'s events from sequence number `from` on, at most `max_events`
  // of them, looking at no more than `max_scan` events in all (so a reader
  // of a quiet tenant on a busy node does bounded work per call).
  // REQUIRES: max_events >= 1, max_scan >= 1.
  Slice Read(uint64_t from, uint64_t tenant, std::optional<uint32_t> layer, size_t max_events,
             size_t max_scan = 1 << 16) const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Entry {
    PageKey key;
    CacheEvent::Kind kind = CacheEvent::Kind::kStored;
  };
  void AppendLocked(CacheEvent::Kind kind, const PageKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const uint64_t epoch_;
  const size_t capacity_;
  mutable absl::Mutex mu_;
  // Event `seq` lives at ring_[(seq - 1) % capacity_]; capacity_ entries.
  std::vector<Entry> ring_ ABSL_GUARDED_BY(mu_);
  // Written under mu_; read without it by next_seq().
  std::atomic<uint64_t> next_seq_{1};
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_CACHE_EVENTS_H_
