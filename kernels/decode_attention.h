// Paged decode attention: one query token per sequence against the pages of
// its page list(s), GQA, fp32 accumulation, split-K with a log-sum-exp merge.
//
// Page pool (common/page_layout.h, Arrangement::kKThenV): page p starts at
// byte p * page_stride_bytes of `pool` and holds
//   K [page_size][n_kv_heads][head_dim]  then  V [page_size][n_kv_heads][head_dim]
// of kv_type (kF16, kBF16 or kF32).
//
// Page lists (CSR, like flashinfer's paged_kv_t), n_lists = n_kv_heads when
// per_head_lists (ArkVale n_groups = n_kv_heads), else 1 (one list shared by
// all heads). List l of sequence b is
//   indices[indptr[b * n_lists + l] .. indptr[b * n_lists + l + 1])
// and serves KV head l (per-head) or every KV head (shared). Pages of a list
// may come in any order, but only the LAST page of each list may be partial:
// it holds last_page_len[b] valid tokens (1..page_size); all others are full.
// An empty list gives out = 0 and lse = -inf for its query heads.
//
// Query head h attends with KV head h / G (G = n_q_heads / n_kv_heads):
//   logits_t = sm_scale * q_h . k_t,   out_h = sum_t softmax(logits)_t v_t,
//   lse_h = log(sum_t exp(logits_t))  (natural log of the scaled logits).
//
// Layouts (fp32 unless said):
//   queries [batch][n_q_heads][head_dim] of query_type
//   out     [batch][n_q_heads][head_dim]
//   lse     [batch][n_q_heads]
//
// Split-K: each list is cut into `num_splits` runs of ceil(n / num_splits)
// consecutive list entries; each run gives a partial (out, lse) in the
// workspace and MergeAttentionStates combines them. Numerically the result is
// the softmax over the union; the fp32 rounding differs from one split only
// by summation order.
//
// Thread-safety: the functions keep no state; concurrent calls are safe when
// their outputs do not overlap.
#ifndef KVTIER_KERNELS_DECODE_ATTENTION_H_
#define KVTIER_KERNELS_DECODE_ATTENTION_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/thread_pool.h"

#if KVTIER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvtier::kernels {

struct PagedKv {
  const void* pool = nullptr;
  ScalarType kv_type = ScalarType::kF16;  // kF32, kF16 or kBF16
  uint32_t page_size = 0;                 // 1..1024
  uint32_t n_kv_heads = 0;                // 1..256
  uint32_t head_dim = 0;                  // 1..1024
  size_t page_stride_bytes = 0;           // REQUIRES: >= K and V bytes of a page
  uint32_t pool_pages = 0;                // every page id is < this

  bool per_head_lists = false;
  const int32_t* indptr = nullptr;         // [batch * n_lists + 1], indptr[0] = 0
  const int32_t* indices = nullptr;        // page ids
  const int32_t* last_page_len = nullptr;  // [batch]
  uint32_t total_entries = 0;              // == indptr[batch * n_lists]

  uint32_t n_lists() const { return per_head_lists ? n_kv_heads : 1u; }
};

struct DecodeAttentionArgs {
  const void* queries = nullptr;
  ScalarType query_type = ScalarType::kF32;  // kF32, kF16 or kBF16
  uint32_t batch = 0;
  uint32_t n_q_heads = 0;  // multiple of kv.n_kv_heads
  float sm_scale = 0.0f;   // usually 1/sqrt(head_dim); finite, > 0
  PagedKv kv;

  // CPU only (the CUDA version cuts lists as its plan says).
  // 1 = no split. Larger values expose more parallelism for long lists:
  // the CPU version runs batch * num_splits tasks with a shared list (each
  // over all KV heads, so a page is read once) and batch * n_kv_heads *
  // num_splits with per-head lists; give it at least as many tasks as
  // threads.
  uint32_t num_splits = 1;  // 1..kMaxSplits
  static constexpr uint32_t kMaxSplits = 256;
  // Partial results of the splits when num_splits > 1: at least
  // DecodeAttentionWorkspaceBytes(...) bytes. The CPU version allocates its
  // own when this is nullptr.
  void* workspace = nullptr;
  size_t workspace_bytes = 0;

  float* out = nullptr;
  float* lse = nullptr;

  // Scalar fields and non-null pointers only (usable with device pointers).
  absl::Status Validate() const;
  // Validate() and the host arrays: kv.indptr (starts at 0, never
  // decreases, ends at kv.total_entries), every page id inside the pool, and
  // kv.last_page_len[b] in [1, page_size] for every sequence with pages.
  // What DecodeAttentionCpu checks; a device kernel trusts these arrays, so
  // whoever stages them for one checks them here first.
  absl::Status ValidateHostArrays() const;
};

// Bytes of split partials: batch * n_q_heads * num_splits * (head_dim + 1) * 4
// (0 when num_splits == 1).
size_t DecodeAttentionWorkspaceBytes(uint32_t batch, uint32_t n_q_heads, uint32_t head_dim,
                                     uint32_t num_splits);

// REQUIRES: finite queries, keys, values. Also checks indptr, indices and
// last_page_len (INVALID_ARGUMENT, nothing written).
absl::Status DecodeAttentionCpu(const DecodeAttentionArgs& args, ThreadPool* pool);

// Merges partial attention states over disjoint key sets:
//   lse = log(sum_s exp(lse_s)),  out = sum_s exp(lse_s - lse) * out_s.
// States with lse_s = -inf (empty) contribute nothing; if all are empty the
// result is out = 0, lse = -inf.
//   states_out [n_rows][n_states][head_dim], states_lse [n_rows][n_states]
//   out        [n_rows][head_dim],           lse        [n_rows]
// `out`/`lse` may not alias the states.
struct MergeStatesArgs {
  const float* states_out = nullptr;
  const float* states_lse = nullptr;
  uint32_t n_rows = 0;
  uint32_t n_states = 0;  // >= 1
  uint32_t head_dim = 0;
  float* out = nullptr;
  float* lse = nullptr;

  absl::Status Validate() const;
};

absl::Status MergeAttentionStatesCpu(const MergeStatesArgs& args, ThreadPool* pool);

#if KVTIER_WITH_CUDA
// DecodeAttentionCuda runs a plan of work items (kernels/decode_plan.h).
absl::Status MergeAttentionStatesCuda(const MergeStatesArgs& args, cudaStream_t stream);
#endif

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_DECODE_ATTENTION_H_
