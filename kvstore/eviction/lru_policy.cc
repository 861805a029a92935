#include "kvstore/eviction/lru_policy.h"

#include <cassert>

namespace kvtier::store {

void LruPolicy::OnInsert(const PageKey& key) {
  assert(!where_.contains(key));
  order_.push_front(key);
  where_[key] = order_.begin();
}

void LruPolicy::OnAccess(const PageKey& key) {
  auto it = where_.find(key);
  if (it == where_.end()) return;
  order_.splice(order_.begin(), order_, it->second);
}

void LruPolicy::OnRemove(const PageKey& key) {
  auto it = where_.find(key);
  if (it == where_.end()) return;
  order_.erase(it->second);
  where_.erase(it);
}

std::optional<PageKey> LruPolicy::Evict(SkipFn skip) {
  for (auto it = order_.rbegin(); it != order_.rend(); ++it) {
    if (skip(*it)) continue;
    PageKey victim = *it;
    order_.erase(std::next(it).base());
    where_.erase(victim);
    return victim;
  }
  return std::nullopt;
}

}  // namespace kvtier::store
