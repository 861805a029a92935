// Page scores on CUDA. A block scores kPagesPerBlock consecutive pages (of
// the flattened batch); its warps take (page, KV head) pairs, so one warp
// reads one digest row pair with 16-byte (fp32) or 8-byte (fp16) loads and
// scores every row of that KV head from it. The query side of each row
// (the positive and negative parts of its query heads, summed) is computed
// once per block into shared memory when the block's pages belong to one
// sequence; a block that straddles sequences computes it per pair.
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/estimate.h"

namespace kvtier::kernels {
namespace {

using cuda_internal::FindRow;
using cuda_internal::WarpSum;

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr uint32_t kPagesPerBlock = 16;
constexpr size_t kMaxQuerySideBytes = 48 * 1024;

// Query side of row r (KV head g's group sum, or query head g * G + j):
// pos and neg over channels, as the CPU computes them (estimate.h). For
// centroids only pos (the plain sum) is used.
struct RowQuery {
  uint32_t first_head;  // first query head of the row
  uint32_t heads;       // query heads summed into it
};

__device__ __forceinline__ void QuerySide(const EstimateArgs& a, uint32_t b, RowQuery row,
                                          uint32_t c, float* pos, float* neg) {
  float p = 0.0f, n = 0.0f;
  for (uint32_t j = row.first_head; j < row.first_head + row.heads; ++j) {
    const float q = LoadAsFloat(a.queries, a.query_type,
                                (size_t{b} * a.n_q_heads + j) * a.head_dim + c);
    if (DigestVectors(a.kind) == 1) {
      p += q;
    } else {
      p += fmaxf(q, 0.0f);
      n += fminf(q, 0.0f);
    }
  }
  *pos = p;
  *neg = n;
}

template <ScalarType DT>
__device__ __forceinline__ void Load4(const void* base, size_t at, float* out) {
  if constexpr (DT == ScalarType::kF32) {
    const float4 v = *reinterpret_cast<const float4*>(static_cast<const float*>(base) + at);
    out[0] = v.x;
    out[1] = v.y;
    out[2] = v.z;
    out[3] = v.w;
  } else {
    const uint2 v = *reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(base) + at);
    out[0] = HalfToFloat(static_cast<uint16_t>(v.x & 0xffffu));
    out[1] = HalfToFloat(static_cast<uint16_t>(v.x >> 16));
    out[2] = HalfToFloat(static_cast<uint16_t>(v.y & 0xffffu));
    out[3] = HalfToFloat(static_cast<uint16_t>(v.y >> 16));
  }
}

// kVec4: head_dim % 4 == 0 and the digest pool 16-byte aligned, so every
// run of 4 channels is one aligned vector load; else one element a load.
template <ScalarType DT, bool kVec4>
__global__ void __launch_bounds__(kThreads) EstimateKernel(EstimateArgs a) {
  extern __shared__ float query_side[];  // [rows][2][head_dim] when cached
  const uint32_t d = a.head_dim;
  const uint32_t group = a.n_q_heads / a.n_kv_heads;
  const uint32_t vecs = DigestVectors(a.kind);
  const bool grouped = a.reduce == HeadReduce::kGroupSum;
  const uint32_t row_heads = grouped ? group : 1u;   // query heads per row
  const uint32_t rows_per_kv = grouped ? 1u : group;  // rows per KV head
  const uint32_t rows = grouped ? a.n_kv_heads : a.n_q_heads;
  const uint32_t p0 = blockIdx.x * kPagesPerBlock;
  const uint32_t p1 = min(a.total_pages, p0 + kPagesPerBlock);
  const uint32_t b0 = FindRow(a.page_indptr, a.batch, p0);
  const bool cached = FindRow(a.page_indptr, a.batch, p1 - 1) == b0 &&
                      size_t{rows} * 2 * d * sizeof(float) <= kMaxQuerySideBytes;
  if (cached) {
    for (uint32_t i = threadIdx.x; i < rows * d; i += blockDim.x) {
      const uint32_t r = i / d, c = i % d;
      float pos, neg;
      QuerySide(a, b0, {r * row_heads, row_heads}, c, &pos, &neg);
      query_side[(size_t{r} * 2) * d + c] = pos;
      query_side[(size_t{r} * 2 + 1) * d + c] = neg;
    }
    __syncthreads();
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const uint32_t pairs = (p1 - p0) * a.n_kv_heads;
  const size_t slot_elems = DigestSlotElements(a.kind, a.n_kv_heads, d);
  for (uint32_t pair = warp; pair < pairs; pair += kWarps) {
    const uint32_t p = p0 + pair / a.n_kv_heads;
    const uint32_t g = pair % a.n_kv_heads;
    const uint32_t b = cached ? b0 : FindRow(a.page_indptr, a.batch, p);
    const size_t first = a.page_indptr[b];
    const size_t n_b = a.page_indptr[b + 1] - first;
    const size_t hi_at = size_t(a.digest_slots[p]) * slot_elems + size_t{g} * vecs * d;
    for (uint32_t j = 0; j < rows_per_kv; ++j) {
      const uint32_t r = g * rows_per_kv + j;
      const RowQuery row{r * row_heads, row_heads};
      float s = 0.0f;
      constexpr uint32_t kStep = kVec4 ? 4 : 1;
      for (uint32_t c0 = lane * kStep; c0 < d; c0 += 32 * kStep) {
        float hi[4], lo[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if constexpr (kVec4) {
          Load4<DT>(a.digests, hi_at + c0, hi);
          if (vecs == 2) Load4<DT>(a.digests, hi_at + d + c0, lo);
        } else {
          hi[0] = LoadAsFloat(a.digests, DT, hi_at + c0);
          if (vecs == 2) lo[0] = LoadAsFloat(a.digests, DT, hi_at + d + c0);
        }
#pragma unroll
        for (uint32_t k = 0; k < kStep; ++k) {
          float pos, neg;
          if (cached) {
            pos = query_side[(size_t{r} * 2) * d + c0 + k];
            neg = query_side[(size_t{r} * 2 + 1) * d + c0 + k];
          } else {
            QuerySide(a, b, row, c0 + k, &pos, &neg);
          }
          s += pos * hi[k];
          if (vecs == 2) s += neg * lo[k];
        }
      }
      s = WarpSum(s);
      if (lane == 0) a.scores[first * rows + size_t{r} * n_b + (p - first)] = s;
    }
  }
}

template <ScalarType DT>
void Launch(const EstimateArgs& a, bool vec4, cudaStream_t stream) {
  const uint32_t blocks = (a.total_pages + kPagesPerBlock - 1) / kPagesPerBlock;
  const size_t want = size_t{a.rows()} * 2 * a.head_dim * sizeof(float);
  const size_t shared = want <= kMaxQuerySideBytes ? want : 0;
  if (vec4) {
    EstimateKernel<DT, true><<<blocks, kThreads, shared, stream>>>(a);
  } else {
    EstimateKernel<DT, false><<<blocks, kThreads, shared, stream>>>(a);
  }
}

}  // namespace

absl::Status EstimateScoresCuda(const EstimateArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate();
  if (!st.ok() || a.batch == 0 || a.total_pages == 0) return st;
  const bool vec4 = a.head_dim % 4 == 0 && reinterpret_cast<uintptr_t>(a.digests) % 16 == 0;
  if (a.digest_type == ScalarType::kF32) {
    Launch<ScalarType::kF32>(a, vec4, stream);
  } else {
    Launch<ScalarType::kF16>(a, vec4, stream);
  }
  return LastLaunchStatus("EstimateScoresCuda");
}

}  // namespace kvtier::kernels
