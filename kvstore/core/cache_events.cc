#include "kvstore/core/cache_events.h"

#include <algorithm>
#include <cstring>

#include "common/secure_random.h"

namespace kvtier::store {
namespace {

uint64_t RandomEpoch() {
  uint64_t epoch = 0;
  while (epoch == 0) {
    uint8_t bytes[sizeof(epoch)];
    SecureRandomBytes(absl::MakeSpan(bytes));
    std::memcpy(&epoch, bytes, sizeof(epoch));
  }
  return epoch;
}

}  // namespace

CacheEventLog::CacheEventLog(size_t capacity)
    : epoch_(RandomEpoch()), capacity_(std::max<size_t>(capacity, 1)), ring_(capacity_) {}

uint64_t CacheEventLog::oldest_seq() const {
  absl::MutexLock lock(&mu_);
  const uint64_t next = next_seq_.load(std::memory_order_relaxed);
  return next - std::min<uint64_t>(next - 1, capacity_);
}

void CacheEventLog::AppendLocked(CacheEvent::Kind kind, const PageKey& key) {
  const uint64_t seq = next_seq_.load(std::memory_order_relaxed);
  ring_[(seq - 1) % capacity_] = Entry{.key = key, .kind = kind};
  next_seq_.store(seq + 1, std::memory_order_release);
}

void CacheEventLog::Append(CacheEvent::Kind kind, const PageKey& key) {
  absl::MutexLock lock(&mu_);
  AppendLocked(kind, key);
}

void CacheEventLog::AppendAll(CacheEvent::Kind kind, absl::Span<const PageKey> keys) {
  if (keys.empty()) return;
  absl::MutexLock lock(&mu_);
  for (const PageKey& key : keys) AppendLocked(kind, key);
}

CacheEventLog::Slice CacheEventLog::Read(uint64_t from, uint64_t tenant,
                                         std::optional<uint32_t> layer, size_t max_events,
                                         size_t max_scan) const {
  Slice slice;
  absl::MutexLock lock(&mu_);
  const uint64_t next = next_seq_.load(std::memory_order_relaxed);
  const uint64_t oldest = next - std::min<uint64_t>(next - 1, capacity_);
  if (from < oldest || from > next) {
    slice.lost = true;
    return slice;
  }
  uint64_t seq = from;
  for (size_t scanned = 0; seq < next && scanned < max_scan && slice.events.size() < max_events;
       ++seq, ++scanned) {
    const Entry& entry = ring_[(seq - 1) % capacity_];
    if (entry.key.tenant != tenant) continue;
    if (layer.has_value() && entry.key.layer != *layer) continue;
    slice.events.push_back(CacheEvent{.seq = seq, .kind = entry.kind, .key = entry.key});
  }
  slice.next_seq = seq;
  return slice;
}

}  // namespace kvtier::store
