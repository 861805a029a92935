// ggml tensor element types as stored in GGUF files, and their conversion
// to fp32.
//
// Block formats (ggml's, little-endian; d and m are IEEE fp16):
//   Q8_0: 32 values in 34 bytes: d, int8 q[32];            x = d * q
//   Q4_0: 32 values in 18 bytes: d, uint8 qs[16];          x = d * (nib - 8)
//   Q4_1: 32 values in 20 bytes: d, m, uint8 qs[16];       x = d * nib + m
// where value j < 16 is the low nibble of qs[j] and value j + 16 its high
// nibble.
#ifndef KVTIER_WORKER_MODEL_LOADER_GGML_TYPES_H_
#define KVTIER_WORKER_MODEL_LOADER_GGML_TYPES_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace kvtier::model {

enum class GgmlType : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 8,
  kBF16 = 30,
};

struct GgmlTypeTraits {
  const char* name;
  int block_values;  // values per block
  int block_bytes;   // bytes per block
};

// Traits of a supported type; nullptr for any other raw value (an unknown or
// unsupported type).
const GgmlTypeTraits* FindGgmlType(uint32_t raw_type);

float Fp16ToFloat(uint16_t bits);

// Converts `src` (n values of `type`, n a multiple of the block size) to
// fp32. INVALID_ARGUMENT on an unsupported type or sizes that disagree.
absl::Status DequantizeToFloat(GgmlType type, absl::Span<const uint8_t> src,
                               absl::Span<float> dst);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_LOADER_GGML_TYPES_H_
