// PageLayout: the shape and byte arrangement of one KV page.
//
// A page holds `page_size` consecutive tokens of one layer of one sequence,
// all KV heads, K and V. A layout travels with every page; nothing in kvtier
// guesses shapes from byte counts.
//
// Byte arrangement for Arrangement::kKThenV (row-major, no padding):
//   K  [page_size][n_kv_heads][head_dim]  of element type
//   V  [page_size][n_kv_heads][head_dim]  of element type
// Arrangement::kTokenInterleaved stores [page_size][2 (K,V)][n_kv_heads][head_dim].
//
// Quantized dtypes append their scales, fp32, after the elements:
//   kInt8:     K scales [n_kv_heads][head_dim]   (per channel, symmetric)
//              V scales [page_size][n_kv_heads]  (per token and head)
//   kFp8E4M3:  K scales [page_size][n_kv_heads]  (per token and head)
//              V scales [page_size][n_kv_heads]
// A dequantized element is `element * scale`.
#ifndef KVTIER_COMMON_PAGE_LAYOUT_H_
#define KVTIER_COMMON_PAGE_LAYOUT_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace kvtier {

// Numbering is part of the wire and disk formats: append only.
enum class DType : uint8_t {
  kF32 = 1,
  kF16 = 2,
  kBF16 = 3,
  kFp8E4M3 = 4,
  kInt8 = 5,
};

enum class Arrangement : uint8_t {
  kKThenV = 1,
  kTokenInterleaved = 2,
};

// Bytes of one element of `dtype` (1, 2 or 4); 0 for an unknown value.
size_t DTypeBytes(DType dtype);
const char* DTypeName(DType dtype);
bool IsQuantized(DType dtype);

struct PageLayout {
  static constexpr uint32_t kMaxPageSize = 1024;
  static constexpr uint32_t kMaxKvHeads = 256;
  static constexpr uint32_t kMaxHeadDim = 1024;
  // Largest page any kvtier component accepts.
  static constexpr size_t kMaxPageBytes = size_t{64} << 20;

  uint32_t page_size = 0;   // tokens per page
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;
  DType dtype = DType::kF16;
  Arrangement arrangement = Arrangement::kKThenV;

  // OK, or INVALID_ARGUMENT naming the first field out of range.
  absl::Status Validate() const;

  // Elements in K (equal to V): page_size * n_kv_heads * head_dim.
  size_t ElementsPerTensor() const;
  // Bytes of K and V elements together, without scales.
  size_t ElementBytes() const;
  // Bytes of the scale section (0 for unquantized dtypes).
  size_t ScaleBytes() const;
  // Total page bytes. REQUIRES: Validate().ok().
  size_t PageBytes() const;

  // Stable 16-byte encoding used in the key-chain seed and on disk:
  // LE u32 page_size, n_kv_heads, head_dim, then u8 dtype, u8 arrangement,
  // two zero bytes.
  static constexpr size_t kEncodedBytes = 16;
  void Encode(uint8_t out[kEncodedBytes]) const;
  // Decodes and validates.
  static absl::Status Decode(const uint8_t in[kEncodedBytes], PageLayout* out);

  std::string DebugString() const;

  friend bool operator==(const PageLayout&, const PageLayout&) = default;
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_PAGE_LAYOUT_H_
