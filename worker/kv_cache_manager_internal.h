// Private state of KvCacheManager, shared by its .cc files
// (kv_cache_manager.cc, kv_cache_manager_tokens.cc). Not part of the API.
#ifndef KVTIER_WORKER_KV_CACHE_MANAGER_INTERNAL_H_
#define KVTIER_WORKER_KV_CACHE_MANAGER_INTERNAL_H_

#include <memory>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/page_key.h"
#include "worker/kv_cache_manager.h"
#include "worker/page_state.h"

namespace kvtier::worker {

// The store pin of one sequence. Shared with backup transfers, which create
// or extend it after their put; mu_ serialises them so one pin id results.
struct KvCacheManager::PinState {
  absl::Mutex mu;
  uint64_t pin_id ABSL_GUARDED_BY(mu) = 0;
};

struct KvCacheManager::LayerTable {
  uint32_t budget_pages = 0;
  uint32_t n_tokens = 0;
  uint32_t slots_held = 0;  // pages in a slot-holding state
  // Per page, index = page number.
  std::vector<PageState> states;
  std::vector<int32_t> slots;        // pool slot, -1 when none
  std::vector<uint64_t> checksums;   // of the bytes backed up
  std::vector<TransferId> puts;      // in-flight backup, 0 when none
  std::vector<float> digests;        // n_digested * digest_slot_floats
  uint32_t n_digested = 0;
  // Recalls started by ApplyPlan and not yet finished.
  std::vector<std::pair<TransferId, std::vector<int32_t>>> recalls;
};

struct KvCacheManager::Sequence {
  uint64_t id = 0;
  std::vector<uint32_t> tokens;
  std::vector<Hash128> hashes;  // per full page, computed on demand
  std::vector<LayerTable> layers;
  std::shared_ptr<PinState> pin = std::make_shared<PinState>();
  // In-flight backups: transfer -> (layer, page) of each page in it.
  absl::flat_hash_map<TransferId, std::vector<std::pair<uint32_t, int32_t>>> puts;
  // Set by a failed backup; every later call on the sequence reports it.
  absl::Status failed;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_KV_CACHE_MANAGER_INTERNAL_H_
