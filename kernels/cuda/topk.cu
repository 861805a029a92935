// Top-k on CUDA, one block per (sequence, output row):
// 1. each candidate's score key (32 bits, ordered like the score: NaN
//    lowest, -0 == +0) is computed once, rows summed in the CPU's order,
//    and kept in shared memory when the candidates fit (else recomputed);
// 2. a radix select of 3 passes (11, 11 and 10 bits; histogram in shared
//    memory, the crossing digit found by one warp) gives the k_eff-th
//    largest key T and how many candidates equal to T are taken (r);
// 3. one ascending scan writes the forced positions, every candidate above
//    T and the first r candidates equal to T: equal scores go to the lower
//    position, exactly as the CPU's rank (score, then lower position).
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/topk.h"

namespace kvtier::kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr uint32_t kMaxBins = 2048;
// Candidates whose keys stay in shared memory (36 KiB; with the 8 KiB
// histogram the block stays under the 48 KiB static limit).
constexpr uint32_t kCachedKeys = 9216;

// Score order as an unsigned key: NaN lowest, -0 == +0.
__device__ __forceinline__ uint32_t ScoreKey(float s) {
  uint32_t u = FloatBits(s);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0;
  if (u == 0x80000000u) u = 0;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Row score of position i: one row, or the rows summed in the CPU's order.
__device__ __forceinline__ float RowScore(const TopKArgs& a, const float* block, uint32_t n,
                                          uint32_t r, uint32_t i) {
  if (!a.sum_rows) return block[size_t{r} * n + i];
  float s = block[i];
  for (uint32_t h = 1; h < a.n_rows; ++h) s += block[size_t{h} * n + i];
  return s;
}

struct Keys {
  const TopKArgs& a;
  const float* block;
  uint32_t n, r, lo;
  const uint32_t* cached;  // keys of candidates lo.., or nullptr

  __device__ __forceinline__ uint32_t operator()(uint32_t i) const {
    return cached != nullptr ? cached[i - lo] : ScoreKey(RowScore(a, block, n, r, i));
  }
};

// Warp 0: the digit where the count of keys from the top digit down
// reaches `need`; writes it and the count still needed within it.
__device__ void FindDigit(const uint32_t* hist, uint32_t bins, uint32_t need, uint32_t* digit,
                          uint32_t* need_in_digit) {
  const uint32_t lane = threadIdx.x % 32;
  const uint32_t per_lane = bins / 32;
  const uint32_t top = bins - lane * per_lane;  // lane 0 owns the highest bins
  uint32_t sum = 0;
  for (uint32_t j = 1; j <= per_lane; ++j) sum += hist[top - j];
  uint32_t inclusive = sum;
  for (uint32_t o = 1; o < 32; o <<= 1) {
    const uint32_t up = __shfl_up_sync(cuda_internal::kFullMask, inclusive, o);
    if (lane >= o) inclusive += up;
  }
  const unsigned reached = __ballot_sync(cuda_internal::kFullMask, inclusive >= need);
  const uint32_t first = __ffs(reached) - 1;  // the sums cover every key, so some lane reaches
  if (lane == first) {
    uint32_t left = need - (inclusive - sum);
    uint32_t d = top - 1;
    for (; hist[d] < left; --d) left -= hist[d];
    *digit = d;
    *need_in_digit = left;
  }
}

// The k_eff-th largest key among candidates [lo, hi) and how many keys equal
// to it belong to the top k_eff. Called by the whole block.
__device__ void SelectThreshold(const Keys& keys, uint32_t hi, uint32_t k_eff, uint32_t* threshold,
                                uint32_t* ties_taken) {
  __shared__ uint32_t hist[kMaxBins];
  __shared__ uint32_t prefix, remaining, digit, need;
  if (threadIdx.x == 0) {
    prefix = 0;
    remaining = k_eff;
  }
  constexpr int kShift[3] = {21, 10, 0};
  constexpr int kBits[3] = {11, 11, 10};
#pragma unroll
  for (int pass = 0; pass < 3; ++pass) {
    const uint32_t bins = 1u << kBits[pass];
    for (uint32_t j = threadIdx.x; j < bins; j += blockDim.x) hist[j] = 0;
    __syncthreads();
    const uint32_t above = kShift[pass] + kBits[pass];
    const uint32_t mask = above >= 32 ? 0u : ~0u << above;
    const uint32_t want = prefix;
    for (uint32_t i = keys.lo + threadIdx.x; i < hi; i += blockDim.x) {
      const uint32_t key = keys(i);
      if ((key & mask) == want) atomicAdd(&hist[(key >> kShift[pass]) & (bins - 1)], 1u);
    }
    __syncthreads();
    if (threadIdx.x < 32) FindDigit(hist, bins, remaining, &digit, &need);
    __syncthreads();
    if (threadIdx.x == 0) {
      prefix = want | (digit << kShift[pass]);
      remaining = need;
    }
    __syncthreads();
  }
  *threshold = prefix;
  *ties_taken = remaining;
}

__global__ void __launch_bounds__(kThreads) TopKKernel(TopKArgs a) {
  __shared__ uint32_t cached[kCachedKeys];
  __shared__ uint32_t warp_takes[kWarps], warp_ties[kWarps];
  __shared__ uint32_t written, ties_seen;
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
  const bool cache = hi - lo <= kCachedKeys;
  if (cache) {
    for (uint32_t i = lo + threadIdx.x; i < hi; i += blockDim.x) {
      cached[i - lo] = ScoreKey(RowScore(a, block, n, r, i));
    }
    __syncthreads();
  }
  const Keys keys{a, block, n, r, lo, cache ? cached : nullptr};
  // Nothing but the forced positions when k_eff == 0.
  uint32_t threshold = ~0u, ties_taken = 0;
  if (k_eff > 0) SelectThreshold(keys, hi, k_eff, &threshold, &ties_taken);

  if (threadIdx.x == 0) written = ties_seen = 0;
  __syncthreads();
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const unsigned below_lane = (1u << lane) - 1u;
  for (uint32_t base = 0; base < n; base += blockDim.x) {
    const uint32_t i = base + threadIdx.x;
    const bool candidate = i < n && i >= lo && i < hi;
    const uint32_t key = candidate && k_eff > 0 ? keys(i) : 0u;
    const bool tie = candidate && k_eff > 0 && key == threshold;
    // Rank of this tie among all ties so far, in position order.
    const unsigned tie_ballot = __ballot_sync(cuda_internal::kFullMask, tie);
    if (lane == 0) warp_ties[warp] = __popc(tie_ballot);
    __syncthreads();
    uint32_t tie_rank = ties_seen + __popc(tie_ballot & below_lane);
    for (int w = 0; w < warp; ++w) tie_rank += warp_ties[w];
    const bool take = (i < n && !candidate) || (candidate && k_eff > 0 && key > threshold) ||
                      (tie && tie_rank < ties_taken);
    const unsigned take_ballot = __ballot_sync(cuda_internal::kFullMask, take);
    if (lane == 0) warp_takes[warp] = __popc(take_ballot);
    __syncthreads();
    uint32_t offset = written + __popc(take_ballot & below_lane);
    for (int w = 0; w < warp; ++w) offset += warp_takes[w];
    if (take) sel[offset] = static_cast<int32_t>(i);
    __syncthreads();
    if (threadIdx.x == 0) {
      for (int w = 0; w < kWarps; ++w) {
        written += warp_takes[w];
        ties_seen += warp_ties[w];
      }
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
