// KvCacheOptions: the shape and bounds of a KvCacheManager
// (kv_cache_manager.h), each default documented where it is declared, and
// the manager's cumulative counters.
#ifndef KVTIER_WORKER_CACHE_KV_CACHE_OPTIONS_H_
#define KVTIER_WORKER_CACHE_KV_CACHE_OPTIONS_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "common/page_layout.h"

namespace kvtier::worker {

struct KvCacheOptions {
  // Page shape. page_size 32 is ArkVale's default; n_kv_heads and head_dim
  // come from the model (0 is rejected). dtype kF32, kF16 or kBF16.
  PageLayout layout{.page_size = 32, .n_kv_heads = 0, .head_dim = 0, .dtype = DType::kF16};
  // Element type of the page digests (kF32 or kF16): two vectors per full
  // page and KV head for Quest's and ArkVale's digests, so 1/page_size of
  // an fp32 page's bytes in fp32 and half that in fp16, on the host and in
  // the device copy that estimation reads. fp16 rounds each bound to the
  // nearest half (relative error 2^-11).
  DType digest_dtype = DType::kF32;
  uint32_t n_layers = 0;
  uint32_t n_q_heads = 0;  // multiple of layout.n_kv_heads
  // Slots of each layer's pool: the device budget, shared by all sequences.
  uint32_t pool_pages_per_layer = 0;
  // Longest sequence in pages; bounds page tables and digests.
  uint32_t max_pages_per_sequence = 4096;
  uint32_t max_sequences = 64;
  // Deadline of every backup and recall transfer.
  absl::Duration transfer_timeout = absl::Seconds(10);
  // TTL of the store pins that keep a live sequence's pages. Extended by
  // every backup of the sequence and, while it waits, every third of the
  // TTL (PinKeeper).
  uint64_t pin_ttl_ms = 600'000;
  // Pages per put batch when many pages fill at once (prefill).
  uint32_t max_put_batch_pages = 64;
  // Inputs of the key chain seed.
  std::string tenant_salt;
  std::string model_fingerprint = "kvtier-model";

  absl::Status Validate() const;
};

// Cumulative counters of one manager.
struct CacheCounters {
  uint64_t pages_backed_up = 0;
  uint64_t bytes_backed_up = 0;
  uint64_t pages_recalled = 0;
  uint64_t bytes_recalled = 0;
  uint64_t pages_evicted = 0;   // left the pool with a stored copy
  uint64_t pages_dropped = 0;   // left the pool for good
  uint64_t pages_recomputed = 0;
  uint64_t pages_adopted = 0;   // filled from a stored prefix: no backup
  // Recalled pages whose key another writer had stored first (the store
  // kept its bytes, which round differently): served as stored.
  uint64_t pages_recalled_foreign = 0;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_CACHE_KV_CACHE_OPTIONS_H_
