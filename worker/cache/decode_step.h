// DecodeRunner: one decode step of one layer, and the end of a prefill,
// over a KvCacheManager and its policy:
//
// Token-level policies (token_policy.h) attend over the whole cache plus
// any auxiliary pages they hold (ARKV's dequantized tier); after attention
// the policy evicts or moves tokens (RunAfterAttention), and their prefill
// appends only the tokens the policy keeps (RunPrefill).
//
//   append k,v ─> estimate (scores of every digested page from q and the
//   digests; skipped when the policy does not need them) ─> select (the
//   policy's plan) ─> recall (evict what the plan drops, fetch what it adds,
//   asynchronously) ─> attention over the plan's pages.
//
// Recall overlaps compute: while the store fetches the missing pages, the
// runner attends over the pages already resident; once they land it attends
// over the recalled pages and merges the two partial states by log-sum-exp
// (kernels/decode_attention.h). Steps that recall nothing run one attention
// over the pages in ascending order, so a plan that attends every page
// gives exactly the full-cache output.
//
// Not thread-safe; one runner per decode thread.
#ifndef KVTIER_WORKER_CACHE_DECODE_STEP_H_
#define KVTIER_WORKER_CACHE_DECODE_STEP_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "kernels/thread_pool.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/device/kernel_dispatch.h"
#include "worker/policy/token_policy.h"

namespace kvtier::worker {

// Wall time per phase, summed over the steps a StepStats saw.
struct PhaseTimes {
  int64_t append_ns = 0;
  int64_t estimate_ns = 0;
  int64_t select_ns = 0;
  int64_t recall_ns = 0;
  int64_t attention_ns = 0;

  int64_t total_ns() const {
    return append_ns + estimate_ns + select_ns + recall_ns + attention_ns;
  }
};

struct StepStats {
  PhaseTimes times;
  uint64_t steps = 0;           // DecodeLayer calls
  uint64_t pages_attended = 0;
  uint64_t pages_recalled = 0;
  uint64_t bytes_recalled = 0;
};

struct DecodeOptions {
  // While layer l attends, start recalling the pages layer l + 1 would
  // select for layer l's query (ArkVale's code has this, off by default; the
  // paper does not describe it). Only for policies that offload. The
  // prefetched pages are installed when layer l + 1's step begins; its own
  // plan, from its own query, then recalls what the guess missed.
  bool prefetch_next_layer = false;
};

class DecodeRunner {
 public:
  // `cache` and `threads` (may be null) must outlive the runner.
  DecodeRunner(KvCacheManager* cache, kernels::ThreadPool* threads,
               DecodeOptions options = DecodeOptions());

  // Appends the prompt's n tokens of `layer` (k, v: [n][Hkv][D] fp32; their
  // token ids must already be appended) and plans the layer with the last
  // prompt token's query, recalling what the plan keeps. `queries` are the
  // last n_queries >= 1 prompt rows ([n_queries][Hq][D] fp32, the last row
  // last); ARKV uses them all. Prefill attention itself is the model's
  // (dense) business.
  absl::Status Prefill(uint64_t seq_id, uint32_t layer, const float* k, const float* v,
                       uint32_t n, const float* queries, uint32_t n_queries,
                       StepStats* stats);

  // One decode token of one layer: q [Hq][D], k and v [Hkv][D], all fp32.
  // Writes out [Hq][D] (and lse [Hq] when not null).
  absl::Status DecodeLayer(uint64_t seq_id, uint32_t layer, const float* q, const float* k,
                           const float* v, float* out, float* lse, StepStats* stats);

 private:
  absl::StatusOr<PagePlan> EstimateAndPlan(uint64_t seq_id, uint32_t layer, const float* q,
                                           bool prefill, StepStats* stats);
  absl::Status Prefetch(uint64_t seq_id, uint32_t layer, const float* q, StepStats* stats);
  // Attends `ready` while the recall started by ApplyPlan runs, then the
  // recalled pages and `aux`, merging the partial states.
  absl::Status AttendOverlapped(uint64_t seq_id, uint32_t layer, const float* q,
                                const std::vector<int32_t>& ready,
                                const std::vector<int32_t>& recalled, const AuxKv& aux,
                                float* out, float* lse, StepStats* stats);
  absl::Status Attend(uint64_t seq_id, uint32_t layer, const float* q,
                      const std::vector<int32_t>& pages, float* out, float* lse);
  // Keeps the `candidates` best of scores_' n pages (all resident) and
  // ranks them by the query's exact attention mass over their tokens,
  // reading only their keys; the others score -1.
  absl::Status RerankExact(uint64_t seq_id, uint32_t layer, const float* q, uint32_t n,
                           uint32_t candidates);
  // Attends with one page list per KV head (PagePlan::head_attend).
  absl::Status AttendHeads(uint64_t seq_id, uint32_t layer, const float* q,
                           const std::vector<std::vector<int32_t>>& lists, float* out,
                           float* lse);
  // `scratch` names the device `pool` is memory of. With `head_indptr`
  // (n_kv_heads + 1 entries) `slots` holds one list per KV head.
  absl::Status AttendPool(KernelScratch* scratch, const void* pool, size_t page_stride_bytes,
                          uint32_t pool_pages, const std::vector<int32_t>& slots,
                          int32_t last_len, const float* q, float* out, float* lse,
                          absl::Span<const int32_t> head_indptr = {});
  absl::Status Merge(const std::vector<std::vector<float>>& outs,
                     const std::vector<std::vector<float>>& lses, float* out, float* lse);

  KvCacheManager* const cache_;
  kernels::ThreadPool* const threads_;
  const DecodeOptions options_;
  // Kernels run on the cache's device; auxiliary pages (AuxKv) are host
  // memory and always run on the CPU.
  KernelScratch device_scratch_;
  KernelScratch host_scratch_;
  // Scratch reused across steps.
  std::vector<float> row_scores_;
  std::vector<float> scores_;
  std::vector<float> exact_keys_;
  std::vector<float> exact_mass_;
  std::vector<uint8_t> key_page_;
  std::vector<int32_t> slots_;
  std::vector<int32_t> head_slots_;
  std::vector<int32_t> head_indptr_;
  std::vector<float> partial_out_;
  std::vector<float> partial_lse_;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_CACHE_DECODE_STEP_H_
