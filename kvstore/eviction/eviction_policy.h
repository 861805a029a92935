// EvictionPolicy: the order in which pages leave one tier.
//
// A policy tracks the keys resident in its tier and, when the store needs
// room, names the next victim. It knows nothing of bytes, pins or leases:
// the store passes a `skip` predicate for pages that cannot leave right now
// (pinned pages on the last tier, pages with active readers).
//
// Thread-safety: not thread-safe; the owning store serializes every call.
#ifndef KVTIER_KVSTORE_EVICTION_EVICTION_POLICY_H_
#define KVTIER_KVSTORE_EVICTION_EVICTION_POLICY_H_

#include <cstddef>
#include <memory>
#include <optional>
#include <string_view>

#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "common/page_key.h"

namespace kvtier::store {

class EvictionPolicy {
 public:
  using SkipFn = absl::FunctionRef<bool(const PageKey&)>;

  virtual ~EvictionPolicy() = default;

  // A page entered the tier. REQUIRES: `key` is not tracked.
  virtual void OnInsert(const PageKey& key) = 0;
  // A resident page was read. Untracked keys are ignored.
  virtual void OnAccess(const PageKey& key) = 0;
  // A page left the tier by other means than Evict (delete, loss,
  // promotion bookkeeping). Untracked keys are ignored.
  virtual void OnRemove(const PageKey& key) = 0;
  // Picks the next victim in policy order, passing over keys for which
  // skip(key) is true, and stops tracking it as an eviction (S3-FIFO
  // remembers it in its ghost queue). nullopt when every tracked key is
  // skipped. The caller must then remove the page from the tier.
  virtual std::optional<PageKey> Evict(SkipFn skip) = 0;
  // Number of tracked keys.
  virtual size_t size() const = 0;
};

// "lru" or "s3fifo"; INVALID_ARGUMENT for any other name.
absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(std::string_view name);
bool IsKnownEvictionPolicy(std::string_view name);

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_EVICTION_EVICTION_POLICY_H_
