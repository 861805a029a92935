#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/topk.h"

namespace kvtier::kernels {
namespace {

constexpr int kThreads = 256;

// Same ranking as the CPU reference: score order, NaN lowest, -0 == +0,
// then the lower position. Distinct positions make every rank distinct.
__device__ __forceinline__ uint64_t Rank(float s, uint32_t pos) {
  uint32_t u = FloatBits(s);
  uint32_t key;
  if ((u & 0x7fffffffu) > 0x7f800000u) {
    key = 0;
  } else {
    if (u == 0x80000000u) u = 0;
    key = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  return (uint64_t{key} << 32) | (0xffffffffu - pos);
}

// Row score of position i: one row, or the rows summed in the CPU's order.
__device__ __forceinline__ float RowScore(const TopKArgs& a, const float* block, uint32_t n,
                                          uint32_t r, uint32_t i) {
  if (!a.sum_rows) return block[size_t{r} * n + i];
  float s = block[i];
  for (uint32_t h = 1; h < a.n_rows; ++h) s += block[size_t{h} * n + i];
  return s;
}

// The k-th largest rank among positions [lo, hi): an 8-pass radix select
// over the 64 rank bits, 8 bits a pass. Ranks are distinct, so exactly k
// positions have a rank >= the result. Called by the whole block.
__device__ uint64_t KthLargestRank(const TopKArgs& a, const float* block, uint32_t n, uint32_t r,
                                   uint32_t lo, uint32_t hi, uint32_t k) {
  __shared__ uint32_t hist[256];
  __shared__ uint64_t prefix;
  __shared__ uint32_t remaining;
  if (threadIdx.x == 0) {
    prefix = 0;
    remaining = k;
  }
  for (int pass = 7; pass >= 0; --pass) {
    const int shift = pass * 8;
    for (int j = threadIdx.x; j < 256; j += blockDim.x) hist[j] = 0;
    __syncthreads();
    const uint64_t mask_hi = pass == 7 ? 0 : (~uint64_t{0} << (shift + 8));
    const uint64_t want = prefix;
    for (uint32_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      const uint64_t key = Rank(RowScore(a, block, n, r, i), i);
      if ((key & mask_hi) == want) atomicAdd(&hist[(key >> shift) & 0xff], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint32_t need = remaining;
      int digit = 255;
      for (; digit > 0 && hist[digit] < need; --digit) need -= hist[digit];
      remaining = need;
      prefix = want | (uint64_t(digit) << shift);
    }
    __syncthreads();
  }
  return prefix;
}

// One block per (sequence, output row): the k_eff-th largest candidate rank
// is the threshold; forced and passing positions are compacted in ascending
// order.
__global__ void TopKKernel(TopKArgs a) {
  __shared__ uint32_t warp_counts[kThreads / 32];
  __shared__ uint32_t written;
  const uint32_t out_rows = a.sum_rows ? 1u : a.n_rows;
  const uint32_t b = blockIdx.x / out_rows;
  const uint32_t r = blockIdx.x % out_rows;
  const size_t first = a.page_indptr[b];
  const uint32_t n = static_cast<uint32_t>(a.page_indptr[b + 1] - first);
  const float* block = a.scores + first * a.n_rows;
  int32_t* sel = a.selected + size_t{blockIdx.x} * a.k;
  for (uint32_t j = threadIdx.x; j < a.k; j += blockDim.x) sel[j] = -1;
  if (threadIdx.x == 0) a.counts[blockIdx.x] = static_cast<int32_t>(n < a.k ? n : a.k);
  if (n <= a.k) {
    for (uint32_t j = threadIdx.x; j < n; j += blockDim.x) sel[j] = static_cast<int32_t>(j);
    return;
  }
  const uint32_t k_eff = a.k - a.sink - a.recent;
  const uint32_t lo = a.sink, hi = n - a.recent;
  // Nothing passes when k_eff == 0.
  const uint64_t threshold =
      k_eff == 0 ? ~uint64_t{0} : KthLargestRank(a, block, n, r, lo, hi, k_eff);
  // Ascending compaction of forced and passing positions.
  if (threadIdx.x == 0) written = 0;
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (uint32_t base = 0; base < n; base += blockDim.x) {
    const uint32_t i = base + threadIdx.x;
    bool take = false;
    if (i < n) {
      take = i < lo || i >= hi || Rank(RowScore(a, block, n, r, i), i) >= threshold;
    }
    const unsigned ballot = __ballot_sync(cuda_internal::kFullMask, take);
    if (lane == 0) warp_counts[warp] = __popc(ballot);
    __syncthreads();
    uint32_t offset = written;
    for (int w = 0; w < warp; ++w) offset += warp_counts[w];
    offset += __popc(ballot & ((1u << lane) - 1u));
    if (take) sel[offset] = static_cast<int32_t>(i);
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 0; w < kThreads / 32; ++w) written += warp_counts[w];
    }
    __syncthreads();
  }
}

}  // namespace

absl::Status SelectTopKCuda(const TopKArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate();
  if (!st.ok() || a.batch == 0) return st;
  TopKKernel<<<a.batch * a.out_rows(), kThreads, 0, stream>>>(a);
  return LastLaunchStatus("SelectTopKCuda");
}

}  // namespace kvtier::kernels
