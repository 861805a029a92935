#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/quantize.h"

namespace kvtier::kernels {
namespace {

using cuda_internal::WarpMax;

constexpr int kThreads = 256;

// Scales sit at byte offsets that may be unaligned: move them bytewise.
__device__ __forceinline__ void PutScale(char* at, float s) { memcpy(at, &s, sizeof(s)); }
__device__ __forceinline__ float GetScale(const char* at) {
  float s;
  memcpy(&s, at, sizeof(s));
  return s;
}

// As the CPU reference: divide by s, or by 1 when s is 0 (the group is all
// zeros or nearly), so that signed zeros and tiny values code identically.
__device__ __forceinline__ uint8_t Code(float x, float s, bool fp8) {
  const float y = __fdiv_rn(x, s > 0.0f ? s : 1.0f);
  if (fp8) return FloatToFp8E4M3(y);
  const float clamped = fminf(fmaxf(y, -127.0f), 127.0f);
  return static_cast<uint8_t>(static_cast<int8_t>(static_cast<int32_t>(RoundHalfEven(clamped))));
}

__device__ __forceinline__ float Decode(uint8_t v, bool fp8) {
  return fp8 ? Fp8E4M3ToFloat(v) : static_cast<float>(static_cast<int8_t>(v));
}

// Quantizes groups of `dim` consecutive elements (one warp per group):
// per (token, head) scales.
__device__ void QuantizeRows(const void* src, ScalarType t, size_t first, size_t groups,
                             uint32_t dim, bool fp8, uint8_t* q, char* scales) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const float qmax = fp8 ? kFp8E4M3Max : 127.0f;
  for (size_t gi = warp; gi < groups; gi += kThreads / 32) {
    const size_t base = first + gi * dim;
    float amax = 0.0f;
    for (uint32_t c = lane; c < dim; c += 32)
      amax = fmaxf(amax, fabsf(LoadAsFloat(src, t, base + c)));
    amax = WarpMax(amax);
    const float s = __fdiv_rn(amax, qmax);
    for (uint32_t c = lane; c < dim; c += 32) {
      q[gi * dim + c] = Code(LoadAsFloat(src, t, base + c), s, fp8);
    }
    if (lane == 0) PutScale(scales + gi * sizeof(float), s);
  }
}

__global__ void QuantizeKernel(PageQuantArgs a) {
  const bool fp8 = a.quant_type == ScalarType::kFp8E4M3;
  const size_t row = size_t{a.n_kv_heads} * a.head_dim;
  const size_t e = size_t{a.page_size} * row;
  const void* src = static_cast<const char*>(a.src) + blockIdx.x * a.src_stride_bytes;
  uint8_t* dst = static_cast<uint8_t*>(a.dst) + blockIdx.x * a.dst_stride_bytes;
  char* scales = reinterpret_cast<char*>(dst + 2 * e);
  const size_t groups = size_t{a.page_size} * a.n_kv_heads;
  if (fp8) {
    QuantizeRows(src, a.float_type, 0, groups, a.head_dim, true, dst, scales);
    scales += groups * sizeof(float);
  } else {
    // K per channel: a thread per channel walks the tokens.
    for (size_t ch = threadIdx.x; ch < row; ch += blockDim.x) {
      float amax = 0.0f;
      for (uint32_t t = 0; t < a.page_size; ++t) {
        amax = fmaxf(amax, fabsf(LoadAsFloat(src, a.float_type, t * row + ch)));
      }
      const float s = __fdiv_rn(amax, 127.0f);
      for (uint32_t t = 0; t < a.page_size; ++t) {
        dst[t * row + ch] = Code(LoadAsFloat(src, a.float_type, t * row + ch), s, false);
      }
      PutScale(scales + ch * sizeof(float), s);
    }
    scales += row * sizeof(float);
  }
  QuantizeRows(src, a.float_type, e, groups, a.head_dim, fp8, dst + e, scales);
}

__global__ void DequantizeKernel(PageQuantArgs a) {
  const bool fp8 = a.quant_type == ScalarType::kFp8E4M3;
  const size_t row = size_t{a.n_kv_heads} * a.head_dim;
  const size_t e = size_t{a.page_size} * row;
  const uint8_t* src = static_cast<const uint8_t*>(a.src) + blockIdx.x * a.src_stride_bytes;
  void* dst = static_cast<char*>(a.dst) + blockIdx.x * a.dst_stride_bytes;
  const char* k_scales = reinterpret_cast<const char*>(src + 2 * e);
  const size_t n_k_scales = fp8 ? size_t{a.page_size} * a.n_kv_heads : row;
  const char* v_scales = k_scales + n_k_scales * sizeof(float);
  for (size_t i = threadIdx.x; i < 2 * e; i += blockDim.x) {
    float s;
    if (i < e) {
      s = GetScale(k_scales + (fp8 ? i / a.head_dim : i % row) * sizeof(float));
    } else {
      s = GetScale(v_scales + ((i - e) / a.head_dim) * sizeof(float));
    }
    StoreFromFloat(dst, a.float_type, i, __fmul_rn(Decode(src[i], fp8), s));
  }
}

}  // namespace

absl::Status QuantizePagesCuda(const PageQuantArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate(/*quantizing=*/true);
  if (!st.ok() || a.n_pages == 0) return st;
  QuantizeKernel<<<a.n_pages, kThreads, 0, stream>>>(a);
  return LastLaunchStatus("QuantizePagesCuda");
}

absl::Status DequantizePagesCuda(const PageQuantArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate(/*quantizing=*/false);
  if (!st.ok() || a.n_pages == 0) return st;
  DequantizeKernel<<<a.n_pages, kThreads, 0, stream>>>(a);
  return LastLaunchStatus("DequantizePagesCuda");
}

}  // namespace kvtier::kernels
