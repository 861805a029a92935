// Importance estimation: the score of every (page, head) of a batch of
// sequences, from the current query and the page digests (digest.h).
//
// Score of page p for query head h (KV head g = h / G, G = n_q_heads /
// n_kv_heads), unscaled (no 1/sqrt(d), no softmax):
//   cuboid digests (kMinMax, kArkvaleMean):  sum_c max(q_hc*hi_gc, q_hc*lo_gc)
//   kCentroid:                               sum_c q_hc*centroid_gc
// For kMinMax this is an upper bound of max_t q_h.k_t over the page (Quest).
// Computed as max(q,0).hi + min(q,0).lo, equal to the max form whenever
// hi >= lo (true of every digest digest.h produces; REQUIRES it of others),
// so kGroupSum costs one pair of dot products per (page, KV head) whatever
// the GQA ratio. Results match the max form up to fp32 rounding.
// HeadReduce::kGroupSum adds the G query heads of each KV head (ArkVale
// averages; the ranking is the same). kPerQueryHead keeps one row per query
// head.
//
// Layouts:
//   queries      [batch][n_q_heads][head_dim] of query_type
//   page_indptr  [batch + 1], page_indptr[0] = 0, non-decreasing; sequence b
//                owns the pages [page_indptr[b], page_indptr[b+1]), n_b pages
//   digest_slots [total_pages]: the digest slot of each page, in page order
//   digests      the digest pool of digest.h
//   scores       fp32; sequence b's block starts at page_indptr[b] * R and is
//                [R][n_b], R = n_kv_heads (kGroupSum) or n_q_heads
//                (kPerQueryHead). So scores[(page_indptr[b]*R) + r*n_b + i]
//                is row r of page i of sequence b.
//
// Thread-safety: the functions keep no state; concurrent calls are safe when
// their outputs do not overlap.
#ifndef KVTIER_KERNELS_ESTIMATE_H_
#define KVTIER_KERNELS_ESTIMATE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/digest.h"
#include "kernels/dtype.h"
#include "kernels/thread_pool.h"

#if KVTIER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvtier::kernels {

enum class HeadReduce : uint8_t {
  kGroupSum = 1,      // one row per KV head
  kPerQueryHead = 2,  // one row per query head
};

struct EstimateArgs {
  const void* queries = nullptr;
  ScalarType query_type = ScalarType::kF32;  // kF32, kF16 or kBF16
  uint32_t batch = 0;
  uint32_t n_q_heads = 0;   // multiple of n_kv_heads
  uint32_t n_kv_heads = 0;  // 1..256
  uint32_t head_dim = 0;    // 1..1024

  const void* digests = nullptr;
  ScalarType digest_type = ScalarType::kF32;  // kF32 or kF16
  DigestKind kind = DigestKind::kMinMax;
  uint32_t digest_capacity = 0;  // slots in the digest pool

  const int32_t* page_indptr = nullptr;
  const int32_t* digest_slots = nullptr;
  uint32_t total_pages = 0;  // == page_indptr[batch]

  HeadReduce reduce = HeadReduce::kGroupSum;
  float* scores = nullptr;  // total_pages * rows() floats

  uint32_t rows() const { return reduce == HeadReduce::kGroupSum ? n_kv_heads : n_q_heads; }
  // Scalar fields and non-null pointers only (usable with device pointers).
  absl::Status Validate() const;
  // Validate() and the host arrays: page_indptr (starts at 0, never
  // decreases, ends at total_pages) and every digest slot below
  // digest_capacity. What EstimateScoresCpu checks; staged for a device
  // kernel, which trusts them, they are checked here first.
  absl::Status ValidateHostArrays() const;
};

// REQUIRES: finite queries and digests. Also checks page_indptr and the
// slots (INVALID_ARGUMENT, nothing written).
absl::Status EstimateScoresCpu(const EstimateArgs& args, ThreadPool* pool);

#if KVTIER_WITH_CUDA
// Device pointers; indptr and slots trusted. Equal to the CPU version up to
// fp32 summation order.
absl::Status EstimateScoresCuda(const EstimateArgs& args, cudaStream_t stream);
#endif

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_ESTIMATE_H_
