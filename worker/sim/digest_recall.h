// Digest recall accuracy (ArkVale Fig. 7): how many of the k truly most
// important pages the digest scores rank in their own top k,
// |E_k ∩ R_k| / |R_k|, for the current query of one (sequence, layer).
//
// True importance of a page is the largest attention probability any of its
// tokens gets, per query head, averaged over all query heads of the layer
// (the heads sharing one ranking). [interp] ALGORITHMS.md §1 leaves the head
// aggregation open; this is its stated choice. Estimated importance is the
// digest score summed over heads (estimate.h), as the policies rank pages.
#ifndef KVTIER_WORKER_SIM_DIGEST_RECALL_H_
#define KVTIER_WORKER_SIM_DIGEST_RECALL_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/cache/kv_cache_manager.h"

namespace kvtier::worker {

// `cache` must hold every page of the layer (a full cache); `lse` is the
// log-sum-exp per query head of the attention of `q` over all its tokens.
// One value per k: the recall at k, or -1 when the layer has at most k full
// pages (nothing to choose).
absl::StatusOr<std::vector<double>> DigestRecallAtK(const KvCacheManager& cache, uint64_t seq_id,
                                                    uint32_t layer, const float* q,
                                                    const float* lse,
                                                    absl::Span<const uint32_t> ks);

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_SIM_DIGEST_RECALL_H_
