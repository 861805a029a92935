#include "kvstore/eviction/s3fifo_policy.h"

#include <algorithm>
#include <cassert>

namespace kvtier::store {

void S3FifoPolicy::OnInsert(const PageKey& key) {
  assert(!where_.contains(key));
  auto ghost = ghost_where_.find(key);
  if (ghost != ghost_where_.end()) {
    ghost_.erase(ghost->second);
    ghost_where_.erase(ghost);
    main_.push_front(Node{.key = key, .freq = 0, .in_main = true});
    where_[key] = main_.begin();
    return;
  }
  small_.push_front(Node{.key = key, .freq = 0, .in_main = false});
  where_[key] = small_.begin();
}

void S3FifoPolicy::OnAccess(const PageKey& key) {
  auto it = where_.find(key);
  if (it == where_.end()) return;
  uint8_t& freq = it->second->freq;
  freq = std::min<uint8_t>(freq + 1, kMaxFreq);
}

void S3FifoPolicy::OnRemove(const PageKey& key) {
  auto it = where_.find(key);
  if (it == where_.end()) return;
  NodeList& list = it->second->in_main ? main_ : small_;
  list.erase(it->second);
  where_.erase(it);
}

std::optional<PageKey> S3FifoPolicy::Evict(SkipFn skip) {
  const size_t small_target = std::max<size_t>(1, size() * kSmallPercent / 100);
  if (!small_.empty() && small_.size() >= small_target) {
    if (auto victim = EvictSmall(skip)) return victim;
    return EvictMain(skip);
  }
  if (auto victim = EvictMain(skip)) return victim;
  return EvictSmall(skip);
}

std::optional<PageKey> S3FifoPolicy::EvictSmall(SkipFn skip) {
  auto it = small_.end();
  while (it != small_.begin()) {
    auto cur = std::prev(it);
    if (skip(cur->key)) {
      it = cur;
      continue;
    }
    if (cur->freq > 1) {
      // `it` stays valid: splice moves the node without invalidating it.
      cur->freq = 0;
      cur->in_main = true;
      main_.splice(main_.begin(), small_, cur);
      continue;
    }
    PageKey victim = cur->key;
    small_.erase(cur);
    where_.erase(victim);
    AddGhost(victim);
    return victim;
  }
  return std::nullopt;
}

std::optional<PageKey> S3FifoPolicy::EvictMain(SkipFn skip) {
  size_t skipped_in_a_row = 0;
  while (!main_.empty() && skipped_in_a_row < main_.size()) {
    auto tail = std::prev(main_.end());
    if (skip(tail->key)) {
      ++skipped_in_a_row;
      main_.splice(main_.begin(), main_, tail);
      continue;
    }
    skipped_in_a_row = 0;
    if (tail->freq > 0) {
      --tail->freq;
      main_.splice(main_.begin(), main_, tail);
      continue;
    }
    PageKey victim = tail->key;
    main_.erase(tail);
    where_.erase(victim);
    return victim;
  }
  return std::nullopt;
}

void S3FifoPolicy::AddGhost(const PageKey& key) {
  if (ghost_where_.contains(key)) return;
  ghost_.push_front(key);
  ghost_where_[key] = ghost_.begin();
  const size_t capacity = std::max<size_t>(1, size());
  while (ghost_.size() > capacity) {
    ghost_where_.erase(ghost_.back());
    ghost_.pop_back();
  }
}

}  // namespace kvtier::store
