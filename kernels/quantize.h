// Page quantization: whole KV pages between a float element type and int8 or
// fp8 e4m3, on exactly the page bytes of common/page_layout.h
// (Arrangement::kKThenV, symmetric, dequantized = element * scale).
//
// Quantized page = K elements, V elements (1 byte each, [page_size]
// [n_kv_heads][head_dim]) followed by fp32 scales:
//   kInt8      K scales [n_kv_heads][head_dim]  per channel (KIVI)
//              V scales [page_size][n_kv_heads] per token and head
//   kFp8E4M3   K scales [page_size][n_kv_heads]
//              V scales [page_size][n_kv_heads]
// Float page = K then V of float_type (kF32, kF16 or kBF16).
//
// Scale of a group (the elements sharing one scale) with largest magnitude a:
//   int8: s = a / 127, q = round-half-even(x / s) in [-127, 127]
//   fp8:  s = a / 448, q = e4m3(x / s) rounded to nearest even, saturating
//   a = 0 gives s = 0 and q = 0.
// Error bounds, per element x of a group with scale s, dequantized to fp32:
//   int8: |deq - x| <= s/2 + a * 2^-22                  (s/2 = a/254)
//   fp8:  |deq - x| <= max(|x| * 2^-4, s * 2^-10) + a * 2^-22
// (half an int8 step; half an e4m3 ulp: 3 mantissa bits, 2^-10 * s in the
// subnormals; a * 2^-22 covers the fp32 roundings of x / s and q * s.)
// Dequantizing to fp16/bf16 adds that type's rounding (2^-11, 2^-8 relative).
// REQUIRES: finite inputs whose groups' magnitudes stay below FLT_MAX.
//
// Thread-safety: the functions keep no state; concurrent calls are safe when
// their outputs do not overlap.
#ifndef KVTIER_KERNELS_QUANTIZE_H_
#define KVTIER_KERNELS_QUANTIZE_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/thread_pool.h"

#if KVTIER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvtier::kernels {

struct PageQuantArgs {
  uint32_t page_size = 0;                     // 1..1024
  uint32_t n_kv_heads = 0;                    // 1..256
  uint32_t head_dim = 0;                      // 1..1024
  ScalarType float_type = ScalarType::kF16;   // kF32, kF16 or kBF16
  ScalarType quant_type = ScalarType::kInt8;  // kInt8 or kFp8E4M3

  // Page i of the source is at src + i * src_stride_bytes, of the
  // destination at dst + i * dst_stride_bytes. Strides are at least the page
  // bytes of their side; the buffers must not overlap.
  uint32_t n_pages = 0;
  const void* src = nullptr;
  size_t src_stride_bytes = 0;
  void* dst = nullptr;
  size_t dst_stride_bytes = 0;

  // Checks fields and strides against the page bytes of each side.
  absl::Status Validate(bool quantizing) const;
};

// Bytes of a float page (K and V of float_type) and of a quantized page
// (elements plus scales); equal to PageLayout::PageBytes() for the same shape.
size_t FloatPageBytes(uint32_t page_size, uint32_t n_kv_heads, uint32_t head_dim,
                      ScalarType float_type);
size_t QuantizedPageBytes(uint32_t page_size, uint32_t n_kv_heads, uint32_t head_dim,
                          ScalarType quant_type);

// src: float pages; dst: quantized pages.
absl::Status QuantizePagesCpu(const PageQuantArgs& args, ThreadPool* pool);
// src: quantized pages; dst: float pages.
absl::Status DequantizePagesCpu(const PageQuantArgs& args, ThreadPool* pool);

#if KVTIER_WITH_CUDA
// Device pointers; same bytes as the CPU version.
absl::Status QuantizePagesCuda(const PageQuantArgs& args, cudaStream_t stream);
absl::Status DequantizePagesCuda(const PageQuantArgs& args, cudaStream_t stream);
#endif

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_QUANTIZE_H_
