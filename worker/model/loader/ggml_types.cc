#include "worker/model/loader/ggml_types.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvtier::model {
namespace {

constexpr GgmlTypeTraits kF32{"F32", 1, 4};
constexpr GgmlTypeTraits kF16{"F16", 1, 2};
constexpr GgmlTypeTraits kBF16{"BF16", 1, 2};
constexpr GgmlTypeTraits kQ4_0{"Q4_0", 32, 18};
constexpr GgmlTypeTraits kQ4_1{"Q4_1", 32, 20};
constexpr GgmlTypeTraits kQ8_0{"Q8_0", 32, 34};

uint16_t LoadU16(const uint8_t* p) { return p[0] | (p[1] << 8); }

void DequantQ8_0(const uint8_t* block, float* out) {
  const float d = Fp16ToFloat(LoadU16(block));
  for (int j = 0; j < 32; ++j) {
    out[j] = d * static_cast<float>(static_cast<int8_t>(block[2 + j]));
  }
}

void DequantQ4_0(const uint8_t* block, float* out) {
  const float d = Fp16ToFloat(LoadU16(block));
  const uint8_t* qs = block + 2;
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>((qs[j] & 0x0f) - 8);
    out[j + 16] = d * static_cast<float>((qs[j] >> 4) - 8);
  }
}

void DequantQ4_1(const uint8_t* block, float* out) {
  const float d = Fp16ToFloat(LoadU16(block));
  const float m = Fp16ToFloat(LoadU16(block + 2));
  const uint8_t* qs = block + 4;
  for (int j = 0; j < 16; ++j) {
    out[j] = d * static_cast<float>(qs[j] & 0x0f) + m;
    out[j + 16] = d * static_cast<float>(qs[j] >> 4) + m;
  }
}

}  // namespace

const GgmlTypeTraits* FindGgmlType(uint32_t raw_type) {
  switch (static_cast<GgmlType>(raw_type)) {
    case GgmlType::kF32:
      return &kF32;
    case GgmlType::kF16:
      return &kF16;
    case GgmlType::kBF16:
      return &kBF16;
    case GgmlType::kQ4_0:
      return &kQ4_0;
    case GgmlType::kQ4_1:
      return &kQ4_1;
    case GgmlType::kQ8_0:
      return &kQ8_0;
  }
  return nullptr;
}

float Fp16ToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf / NaN
  } else if (exp != 0) {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;  // +-0
  } else {
    // Subnormal: shift the mantissa up to normalise it.
    exp = 113;
    while ((mant & 0x400) == 0) {
      mant <<= 1;
      --exp;
    }
    bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

absl::Status DequantizeToFloat(GgmlType type, absl::Span<const uint8_t> src,
                               absl::Span<float> dst) {
  const GgmlTypeTraits* t = FindGgmlType(static_cast<uint32_t>(type));
  if (t == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "unsupported ggml type ", static_cast<uint32_t>(type)));
  }
  const size_t n = dst.size();
  if (n % t->block_values != 0 ||
      src.size() != n / t->block_values * t->block_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        t->name, ": ", src.size(), " bytes do not hold ", n, " values"));
  }
  if (type == GgmlType::kF32) {
    if (n > 0) std::memcpy(dst.data(), src.data(), n * sizeof(float));
    return absl::OkStatus();
  }
  const uint8_t* p = src.data();
  float* out = dst.data();
  const size_t blocks = n / t->block_values;
  for (size_t b = 0; b < blocks; ++b, p += t->block_bytes,
              out += t->block_values) {
    switch (type) {
      case GgmlType::kF32:
        std::memcpy(out, p, 4);
        break;
      case GgmlType::kF16:
        *out = Fp16ToFloat(LoadU16(p));
        break;
      case GgmlType::kBF16: {
        const uint32_t bits = static_cast<uint32_t>(LoadU16(p)) << 16;
        std::memcpy(out, &bits, 4);
        break;
      }
      case GgmlType::kQ4_0:
        DequantQ4_0(p, out);
        break;
      case GgmlType::kQ4_1:
        DequantQ4_1(p, out);
        break;
      case GgmlType::kQ8_0:
        DequantQ8_0(p, out);
        break;
    }
  }
  return absl::OkStatus();
}

}  // namespace kvtier::model
