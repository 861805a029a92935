#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/digest.h"

namespace kvtier::kernels {
namespace {

__device__ __forceinline__ void StoreDigest(void* base, ScalarType t, size_t i, float v,
                                            int direction) {
  if (t == ScalarType::kF32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<uint16_t*>(base)[i] =
        direction == 0 ? FloatToHalf(v) : FloatToHalfDirected(v, direction > 0);
  }
}

// One block per (listed page, KV head); a thread per channel (strided). The
// per-channel token loop runs in the CPU reference's order.
__global__ void DigestKernel(DigestArgs a, uint32_t tokens) {
  const uint32_t i = blockIdx.x;
  const uint32_t head = blockIdx.y;
  const size_t d = a.head_dim;
  const size_t row = size_t{a.n_kv_heads} * d;
  const char* page_k = static_cast<const char*>(a.pool) + a.page_ids[i] * a.page_stride_bytes;
  const uint32_t vecs = DigestVectors(a.kind);
  const size_t out = a.digest_slots[i] * DigestSlotElements(a.kind, a.n_kv_heads, a.head_dim) +
                     size_t{head} * vecs * d;
  for (size_t c = threadIdx.x; c < d; c += blockDim.x) {
    const size_t base = head * d + c;
    if (a.kind == DigestKind::kCentroid) {
      float sum = 0.0f;
      for (uint32_t t = 0; t < tokens; ++t) sum += LoadAsFloat(page_k, a.key_type, t * row + base);
      StoreDigest(a.digests, a.digest_type, out + c, sum * (1.0f / static_cast<float>(tokens)), 0);
      continue;
    }
    float hi = LoadAsFloat(page_k, a.key_type, base);
    float lo = hi;
    for (uint32_t t = 1; t < tokens; ++t) {
      const float k = LoadAsFloat(page_k, a.key_type, t * row + base);
      hi = hi < k ? k : hi;
      lo = lo > k ? k : lo;
    }
    if (a.kind == DigestKind::kArkvaleMean) {
      const float centre = 0.5f * (hi + lo);
      float dev = 0.0f;
      for (uint32_t t = 0; t < tokens; ++t) {
        const float x = LoadAsFloat(page_k, a.key_type, t * row + base) - centre;
        dev += x < 0.0f ? -x : x;
      }
      const float r = __fmul_rn(dev, 1.0f / static_cast<float>(tokens));
      StoreDigest(a.digests, a.digest_type, out + c, __fadd_rn(centre, r), 0);
      StoreDigest(a.digests, a.digest_type, out + d + c, __fsub_rn(centre, r), 0);
    } else {
      StoreDigest(a.digests, a.digest_type, out + c, hi, 1);
      StoreDigest(a.digests, a.digest_type, out + d + c, lo, -1);
    }
  }
}

}  // namespace

absl::Status ComputeDigestsCuda(const DigestArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate();
  if (!st.ok() || a.n_pages == 0) return st;
  const uint32_t tokens = a.num_tokens == 0 ? a.page_size : a.num_tokens;
  const unsigned threads = a.head_dim >= 128 ? 128 : ((a.head_dim + 31) / 32) * 32;
  DigestKernel<<<dim3(a.n_pages, a.n_kv_heads), threads, 0, stream>>>(a, tokens);
  return LastLaunchStatus("ComputeDigestsCuda");
}

}  // namespace kvtier::kernels
