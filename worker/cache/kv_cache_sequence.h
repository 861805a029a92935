// The state KvCacheManager keeps per sequence, shared by the files that
// implement the manager (kv_cache_manager.cc: sequences, appends, eviction;
// kv_cache_manager_store.cc: backups to and recalls from the page store).
// Not part of the manager's interface.
#ifndef KVTIER_WORKER_CACHE_KV_CACHE_SEQUENCE_H_
#define KVTIER_WORKER_CACHE_KV_CACHE_SEQUENCE_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "common/page_key.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/cache/page_table.h"

namespace kvtier::worker {

struct KvCacheManager::Sequence {
  uint64_t id = 0;
  std::vector<uint32_t> tokens;
  std::vector<Hash128> hashes;  // per full page, computed on demand
  std::vector<PageTable> layers;
  // Pages [0, stored_prefix_pages) of every layer came from the store.
  uint32_t stored_prefix_pages = 0;
  // Their pin is taken when the first K/V enters the cache: after the load,
  // which it would otherwise compete with for the store.
  bool prefix_pin_pending = false;
  std::shared_ptr<SequencePin> pin = std::make_shared<SequencePin>();
  // In-flight backups: transfer -> (layer, page) of each page in it.
  absl::flat_hash_map<TransferId, std::vector<std::pair<uint32_t, int32_t>>> puts;
  // Set by a failed backup; every later call on the sequence reports it.
  absl::Status failed;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_CACHE_KV_CACHE_SEQUENCE_H_
