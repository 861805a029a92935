// LruPolicy: least recently inserted or accessed page leaves first.
//
// Thread-safety: not thread-safe (see EvictionPolicy).
#ifndef KVTIER_KVSTORE_EVICTION_LRU_POLICY_H_
#define KVTIER_KVSTORE_EVICTION_LRU_POLICY_H_

#include <list>

#include "absl/container/flat_hash_map.h"
#include "kvstore/eviction/eviction_policy.h"

namespace kvtier::store {

class LruPolicy final : public EvictionPolicy {
 public:
  void OnInsert(const PageKey& key) override;
  void OnAccess(const PageKey& key) override;
  void OnRemove(const PageKey& key) override;
  std::optional<PageKey> Evict(SkipFn skip) override;
  size_t size() const override { return order_.size(); }

 private:
  // Front is the most recently used key.
  std::list<PageKey> order_;
  absl::flat_hash_map<PageKey, std::list<PageKey>::iterator> where_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_EVICTION_LRU_POLICY_H_
