// TokenCache: what a token-level policy (token_policy.h: H2O, TOVA, ARKV)
// may read and change in the paged cache of a sequence. The cache manager
// (cache/kv_cache_manager.h) implements it; policies see nothing else of
// the cache, so they build and test without it.
//
// Tokens are numbered by cache slot: token j of a layer lives in page
// j / page_size of its page table (token_policy.h says how slots move).
//
// Thread-safety: called only from the decode thread that owns the cache.
#ifndef KVTIER_WORKER_POLICY_TOKEN_CACHE_H_
#define KVTIER_WORKER_POLICY_TOKEN_CACHE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/page_layout.h"
#include "worker/policy/policy.h"

namespace kvtier::worker {

class TokenCache {
 public:
  virtual ~TokenCache() = default;

  // The pool's page layout and the model's query heads.
  virtual const PageLayout& layout() const = 0;
  virtual uint32_t n_q_heads() const = 0;

  // The (sequence, layer)'s view, scores left empty.
  virtual absl::StatusOr<LayerView> View(uint64_t seq_id, uint32_t layer) const = 0;
  // Token ids appended to the sequence so far.
  virtual absl::StatusOr<uint32_t> TokenIdCount(uint64_t seq_id) const = 0;

  // Appends n tokens of one layer: k and v are [n][n_kv_heads][head_dim]
  // fp32, stored in the pool's dtype.
  virtual absl::Status AppendKv(uint64_t seq_id, uint32_t layer, const float* k, const float* v,
                                uint32_t n) = 0;
  // Removes the cached tokens in `slots` (strictly descending), each by
  // moving the newest cached token into it; a page left empty is freed.
  virtual absl::Status EvictTokens(uint64_t seq_id, uint32_t layer,
                                   absl::Span<const uint32_t> slots) = 0;
  // Per-head eviction: `slots_by_head` holds `count` slots for each KV head
  // ([n_kv_heads][count], each head's strictly descending); head h's slice
  // of the newest cached token moves into each of head h's slots, so slot j
  // of different heads may hold different tokens. The cache shrinks by
  // `count` tokens.
  virtual absl::Status EvictHeadTokens(uint64_t seq_id, uint32_t layer,
                                       absl::Span<const uint32_t> slots_by_head) = 0;
  // The cached tokens in slot order as fp32: k (and v unless null) become
  // [n_tokens][n_kv_heads][head_dim] (after per-head evictions, row j's
  // heads are each head's slot j).
  virtual absl::Status ReadTokens(uint64_t seq_id, uint32_t layer, std::vector<float>* k,
                                  std::vector<float>* v) const = 0;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_TOKEN_CACHE_H_
