#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/estimate.h"

namespace kvtier::kernels {
namespace {

using cuda_internal::FindRow;
using cuda_internal::WarpSum;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;

// One block per page (flattened over the batch); warp w scores KV heads
// w, w + 4, ...; lanes split the channels and reduce with shuffles.
__global__ void EstimateKernel(EstimateArgs a) {
  const uint32_t p = blockIdx.x;
  const uint32_t b = FindRow(a.page_indptr, a.batch, p);
  const size_t first = a.page_indptr[b];
  const size_t n_b = a.page_indptr[b + 1] - first;
  const size_t d = a.head_dim;
  const uint32_t group = a.n_q_heads / a.n_kv_heads;
  const uint32_t vecs = DigestVectors(a.kind);
  const size_t slot =
      size_t(a.digest_slots[p]) * DigestSlotElements(a.kind, a.n_kv_heads, a.head_dim);
  const size_t rows = a.reduce == HeadReduce::kGroupSum ? a.n_kv_heads : a.n_q_heads;
  float* out = a.scores + first * rows + (p - first);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const bool grouped = a.reduce == HeadReduce::kGroupSum;
  const uint32_t row_heads = grouped ? group : 1u;  // query heads per score row
  // Rows of KV head g: g (grouped) or g * group + j. A row's score is
  // pos.hi + neg.lo with pos / neg the positive / negative parts of its
  // query heads summed (estimate.h).
  for (uint32_t g = warp; g < a.n_kv_heads; g += kWarps) {
    const size_t hi_at = slot + size_t{g} * vecs * d;
    for (uint32_t j0 = 0; j0 < group; j0 += row_heads) {
      float s = 0.0f;
      for (size_t c = lane; c < d; c += 32) {
        float pos = 0.0f, neg = 0.0f;
        for (uint32_t j = j0; j < j0 + row_heads; ++j) {
          const float q = LoadAsFloat(a.queries, a.query_type,
                                      (size_t{b} * a.n_q_heads + g * group + j) * d + c);
          if (vecs == 1) {
            pos += q;
          } else {
            pos += fmaxf(q, 0.0f);
            neg += fminf(q, 0.0f);
          }
        }
        const float hi = LoadAsFloat(a.digests, a.digest_type, hi_at + c);
        s += pos * hi;
        if (vecs == 2) s += neg * LoadAsFloat(a.digests, a.digest_type, hi_at + d + c);
      }
      s = WarpSum(s);
      const size_t r = grouped ? g : size_t{g} * group + j0;
      if (lane == 0) out[r * n_b] = s;
    }
  }
}

}  // namespace

absl::Status EstimateScoresCuda(const EstimateArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate();
  if (!st.ok() || a.batch == 0 || a.total_pages == 0) return st;
  EstimateKernel<<<a.total_pages, kThreads, 0, stream>>>(a);
  return LastLaunchStatus("EstimateScoresCuda");
}

}  // namespace kvtier::kernels
