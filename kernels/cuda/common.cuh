// Device helpers shared by the CUDA kernels. Not part of the kernels/ API.
#ifndef KVTIER_KERNELS_CUDA_COMMON_CUH_
#define KVTIER_KERNELS_CUDA_COMMON_CUH_

#include <cstdint>

#include "kernels/dtype.h"

namespace kvtier::kernels::cuda_internal {

constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float WarpSum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sequence owning flattened entry `p` of a CSR with `n` rows: the largest b
// with indptr[b] <= p and indptr[b + 1] > p.
__device__ __forceinline__ uint32_t FindRow(const int32_t* indptr, uint32_t n, int64_t p) {
  uint32_t lo = 0, hi = n;  // answer in [lo, hi)
  while (hi - lo > 1) {
    const uint32_t mid = (lo + hi) / 2;
    if (indptr[mid] <= p) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

}  // namespace kvtier::kernels::cuda_internal

#endif  // KVTIER_KERNELS_CUDA_COMMON_CUH_
