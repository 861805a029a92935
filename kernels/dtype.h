// Element types of kernel inputs and outputs, and exact conversions between
// fp32 and the 16- and 8-bit storage formats.
//
// Storage types travel as raw bits (uint16_t for fp16/bf16, uint8_t for fp8)
// so that CPU code needs no compiler half-precision support. Every narrowing
// conversion rounds to nearest, ties to even:
//   fp16:      IEEE binary16; overflow gives +-inf, NaN stays NaN (quiet).
//   bf16:      upper half of binary32; NaN stays NaN (quiet).
//   fp8 e4m3:  OCP "E4M3FN" (bias 7, no infinities, 0x7f/0xff are NaN, largest
//              finite 448). Out-of-range finite values and infinities
//              saturate to +-448 (the "satfinite" mode of sm_89+ cvt); NaN
//              gives 0x7f with the sign kept.
//
// All functions are usable from host and device code (nvcc) and are pure.
#ifndef KVTIER_KERNELS_DTYPE_H_
#define KVTIER_KERNELS_DTYPE_H_

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define KVTIER_HD __host__ __device__ __forceinline__
#else
#define KVTIER_HD inline
#endif

namespace kvtier::kernels {

// Numbering equals kvtier::DType (common/page_layout.h) so callers can
// static_cast between the two; kernels/ does not depend on common/.
enum class ScalarType : uint8_t {
  kF32 = 1,
  kF16 = 2,
  kBF16 = 3,
  kFp8E4M3 = 4,
  kInt8 = 5,
};

// Bytes of one element; 0 for a value outside the enum.
constexpr size_t ScalarBytes(ScalarType t) {
  switch (t) {
    case ScalarType::kF32:
      return 4;
    case ScalarType::kF16:
    case ScalarType::kBF16:
      return 2;
    case ScalarType::kFp8E4M3:
    case ScalarType::kInt8:
      return 1;
  }
  return 0;
}

// True for kF32, kF16, kBF16: the types of unquantized keys, values, queries.
constexpr bool IsFloatType(ScalarType t) {
  return t == ScalarType::kF32 || t == ScalarType::kF16 || t == ScalarType::kBF16;
}

const char* ScalarTypeName(ScalarType t);

KVTIER_HD uint32_t FloatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

KVTIER_HD float BitsToFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

// Rounds to the nearest integer, ties to even, for |x| < 2^22 (the FPU's
// default mode does the rounding; unlike nearbyintf this vectorises without
// SSE4.1 and needs no libm call).
KVTIER_HD float RoundHalfEven(float x) {
  constexpr float kMagic = 12582912.0f;  // 1.5 * 2^23
  // IEEE semantics (no -ffast-math) forbid folding (x + m) - m to x.
  return (x + kMagic) - kMagic;
}

// ---- fp16 ----------------------------------------------------------------

KVTIER_HD float HalfToFloat(uint16_t h) {
  // Branch-free so loops over it vectorise: the exponent and mantissa bits,
  // shifted into fp32 position, read as a float 2^112 times too small, for
  // normals and subnormals alike; the multiply by 2^112 is exact.
  const uint32_t sign = uint32_t{h & 0x8000u} << 16;
  const uint32_t em = h & 0x7fffu;
  const float scaled = BitsToFloat(em << 13) * 5.192296858534828e+33f;    // 2^112
  const uint32_t special = 0x7f800000u | ((em & 0x3ffu) << 13);           // inf / NaN
  const uint32_t is_special = 0u - static_cast<uint32_t>(em >= 0x7c00u);  // mask
  return BitsToFloat(sign | (special & is_special) | (FloatBits(scaled) & ~is_special));
}

KVTIER_HD uint16_t FloatToHalf(float f) {
  // Every path is computed and the right one selected, so loops over this
  // vectorise.
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t a = x & 0x7fffffffu;
  // inf stays inf; NaN keeps its top payload bits and becomes quiet.
  const uint32_t special = 0x7c00u | (a > 0x7f800000u ? (0x200u | ((a >> 13) & 0x3ffu)) : 0u);
  // Below 2^-14 (fp16 subnormals): adding 0.5f puts the fp16 subnormal ulp
  // (2^-24) at the fp32 ulp of the sum, so the FPU rounds to nearest even.
  const uint32_t sub = FloatBits(BitsToFloat(a) + 0.5f) - 0x3f000000u;
  // Normals: rebias the exponent (127 -> 15) and round to nearest even.
  const uint32_t normal = (a + 0xc8000fffu + ((a >> 13) & 1u)) >> 13;
  uint32_t h = a < 0x38800000u ? sub : normal;
  h = a >= 0x477ff000u ? 0x7c00u : h;  // >= 65520 rounds to inf
  h = a >= 0x7f800000u ? special : h;
  return static_cast<uint16_t>(sign | h);
}

// The nearest fp16 at or above (`up`) or at or below (!up) v, so that a
// rounded interval still contains v. NaN stays NaN.
KVTIER_HD uint16_t FloatToHalfDirected(float v, bool up) {
  const uint16_t h = FloatToHalf(v);
  const float r = HalfToFloat(h);
  if (r != r || (up ? r >= v : r <= v)) return h;
  if ((h & 0x7fffu) == 0) return up ? 0x0001u : 0x8001u;  // +-0 -> +-2^-24
  // Away from zero increments the magnitude bits, towards zero decrements.
  const bool away = up != ((h & 0x8000u) != 0);
  return static_cast<uint16_t>(away ? h + 1 : h - 1);
}

// ---- bf16 ----------------------------------------------------------------

KVTIER_HD float BF16ToFloat(uint16_t b) { return BitsToFloat(uint32_t{b} << 16); }

KVTIER_HD uint16_t FloatToBF16(float f) {
  const uint32_t x = FloatBits(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) {
    return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  }
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(rounded >> 16);
}

// ---- fp8 e4m3 (E4M3FN) ---------------------------------------------------

inline constexpr float kFp8E4M3Max = 448.0f;

KVTIER_HD float Fp8E4M3ToFloat(uint8_t v) {
  const uint32_t sign = uint32_t{v & 0x80u} << 24;
  const uint32_t exp = (v >> 3) & 0xfu;
  const uint32_t mant = v & 0x7u;
  const float sub = static_cast<float>(mant) * 0.001953125f;  // mant * 2^-9
  const uint32_t normal = ((exp + 120u) << 23) | (mant << 20);
  uint32_t bits = exp == 0 ? FloatBits(sub) : normal;
  bits = (v & 0x7fu) == 0x7fu ? 0x7fc00000u : bits;  // NaN
  return BitsToFloat(sign | bits);
}

KVTIER_HD uint8_t FloatToFp8E4M3(float f) {
  // Branch-free like FloatToHalf.
  const uint32_t x = FloatBits(f);
  const uint32_t sign = (x >> 24) & 0x80u;
  const uint32_t a = x & 0x7fffffffu;
  const float af = BitsToFloat(a);
  // Below 2^-6 (subnormals, ulp 2^-9). A result of 8 is the encoding of
  // 2^-6, the smallest normal: still correct. The operand is clamped so that
  // other inputs (even NaN) give a small finite value, then discarded.
  const float small = af < 0.015625f ? af : 0.015625f;
  const uint32_t sub = static_cast<uint32_t>(RoundHalfEven(small * 512.0f));
  // Normals: round to 3 mantissa bits, rebias the exponent (127 -> 7).
  const uint32_t r = a + 0x7ffffu + ((a >> 20) & 1u);
  const uint32_t normal = (((r >> 23) - 120u) << 3) | ((r >> 20) & 0x7u);
  uint32_t v = a < 0x3c800000u ? sub : normal;
  v = a >= 0x43e00000u ? 0x7eu : v;  // |f| >= 448 (and inf) saturate
  v = a > 0x7f800000u ? 0x7fu : v;   // NaN
  return static_cast<uint8_t>(sign | (v & 0x7fu));
}

// ---- generic load/store --------------------------------------------------

// Element `i` of a buffer of type `t` (kF32, kF16 or kBF16) as fp32.
KVTIER_HD float LoadAsFloat(const void* base, ScalarType t, size_t i) {
  if (t == ScalarType::kF32) return static_cast<const float*>(base)[i];
  const uint16_t v = static_cast<const uint16_t*>(base)[i];
  return t == ScalarType::kF16 ? HalfToFloat(v) : BF16ToFloat(v);
}

// Stores `v` rounded to `t` (kF32, kF16 or kBF16) at element `i`.
KVTIER_HD void StoreFromFloat(void* base, ScalarType t, size_t i, float v) {
  if (t == ScalarType::kF32) {
    static_cast<float*>(base)[i] = v;
  } else {
    static_cast<uint16_t*>(base)[i] = t == ScalarType::kF16 ? FloatToHalf(v) : FloatToBF16(v);
  }
}

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_DTYPE_H_
