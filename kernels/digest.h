// Page digest: a per-(page, KV head) summary of the keys that lets a decode
// step score a page without reading it (Quest, ArkVale).
//
// Kinds (per channel c of one KV head, over the page's valid tokens t):
//   kMinMax       hi_c = max_t k_tc, lo_c = min_t k_tc. The bounding cuboid:
//                 it contains every key, so its score (estimate.h) is an
//                 upper bound of max_t q.k_t. In an fp16 digest hi is rounded
//                 up and lo down, so containment survives the rounding.
//   kArkvaleMean  centre_c = (max + min)/2, r_c = mean_t |k_tc - centre_c|,
//                 hi = centre + r, lo = centre - r (ArkVale's default). It does
//                 NOT in general contain every key.
//   kCentroid     one vector, the mean key (baseline scored by q.c).
//
// Digest pool layout (elements of `digest_type`, row-major, no padding):
//   slot s:  [n_kv_heads][DigestVectors(kind)][head_dim]
//            vector 0 = hi (or the centroid), vector 1 = lo
//   slot s starts at element s * DigestSlotElements(kind, n_kv_heads, head_dim).
//
// Key source layout: page p of the KV pool starts at byte
// p * page_stride_bytes of `pool`; its K tensor [page_size][n_kv_heads]
// [head_dim] of `key_type` comes first (common/page_layout.h kKThenV).
//
// Thread-safety: the functions keep no state; concurrent calls are safe when
// their outputs do not overlap.
#ifndef KVTIER_KERNELS_DIGEST_H_
#define KVTIER_KERNELS_DIGEST_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/thread_pool.h"

#if KVTIER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvtier::kernels {

enum class DigestKind : uint8_t {
  kMinMax = 1,
  kArkvaleMean = 2,
  kCentroid = 3,
};

// Vectors per (slot, KV head): 2 for the cuboids, 1 for the centroid.
constexpr uint32_t DigestVectors(DigestKind kind) {
  return kind == DigestKind::kCentroid ? 1u : 2u;
}

constexpr size_t DigestSlotElements(DigestKind kind, uint32_t n_kv_heads, uint32_t head_dim) {
  return size_t{DigestVectors(kind)} * n_kv_heads * head_dim;
}

struct DigestArgs {
  // KV pool holding the pages; see the file comment for the layout.
  const void* pool = nullptr;
  size_t page_stride_bytes = 0;            // REQUIRES: >= page_size*n_kv_heads*head_dim*elem
  uint32_t pool_pages = 0;                 // pages in the pool; every page id is < this
  ScalarType key_type = ScalarType::kF16;  // kF32, kF16 or kBF16
  uint32_t page_size = 0;                  // 1..1024
  uint32_t n_kv_heads = 0;                 // 1..256
  uint32_t head_dim = 0;                   // 1..1024

  // Digest pages page_ids[i], i < n_pages, over their first `num_tokens`
  // tokens (0 means page_size).
  const int32_t* page_ids = nullptr;
  uint32_t n_pages = 0;
  uint32_t num_tokens = 0;
  DigestKind kind = DigestKind::kMinMax;

  // Output pool: the digest of page_ids[i] is written to slot
  // digest_slots[i] (< digest_capacity). Slots must be distinct.
  void* digests = nullptr;
  ScalarType digest_type = ScalarType::kF32;  // kF32 or kF16
  const int32_t* digest_slots = nullptr;
  uint32_t digest_capacity = 0;

  // Checks the scalar fields and non-null pointers (reads no array), so it
  // also serves device pointers. INVALID_ARGUMENT names the first bad field.
  absl::Status Validate() const;
};

// Computes the digests of the listed pages with fp32 arithmetic.
// REQUIRES: keys finite. Also checks page ids and slots (INVALID_ARGUMENT,
// nothing written). `pool` may be nullptr (runs on the calling thread).
absl::Status ComputeDigestsCpu(const DigestArgs& args, ThreadPool* pool);

#if KVTIER_WITH_CUDA
// Same result as the CPU version up to fp32 summation order (kArkvaleMean,
// kCentroid; kMinMax is exact). All pointers are device pointers; ids and
// slots are trusted (not checked). Asynchronous on `stream`.
absl::Status ComputeDigestsCuda(const DigestArgs& args, cudaStream_t stream);
#endif

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_DIGEST_H_
