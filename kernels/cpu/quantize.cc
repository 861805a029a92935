#include "kernels/quantize.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "kernels/cpu/internal.h"

namespace kvtier::kernels {
namespace {

constexpr char kWhat[] = "PageQuant";

struct Shape {
  size_t tokens, heads, dim;
  size_t elems() const { return tokens * heads * dim; }
  size_t row() const { return heads * dim; }
};

inline float Abs(float x) { return std::fabs(x); }

// Divisor for a group with scale s. When s is 0 every element of the group
// is 0 (or so small that x / 1 rounds to code 0), so dividing by 1 gives the
// right code and keeps the loops free of branches.
inline float Divisor(float s) { return s > 0.0f ? s : 1.0f; }

// int8 code of x / div: division, not x * (1/div), so one rounding keeps
// the stated bound; |x / div| <= 127 up to that rounding.
inline int8_t Int8Code(float x, float div) {
  float y = x / div;
  y = y < -127.0f ? -127.0f : y;
  y = y > 127.0f ? 127.0f : y;
  return static_cast<int8_t>(static_cast<int32_t>(RoundHalfEven(y)));
}

// Scales in the page are fp32 at a byte offset that may be unaligned.
void PutScales(char* dst, const std::vector<float>& scales) {
  std::memcpy(dst, scales.data(), scales.size() * sizeof(float));
}
void GetScales(const char* src, std::vector<float>& scales) {
  std::memcpy(scales.data(), src, scales.size() * sizeof(float));
}

// Per channel (int8 K): scale[h*d + c] over the tokens.
void QuantizePerChannel(const float* x, const Shape& sh, int8_t* q, std::vector<float>& s) {
  const size_t row = sh.row();
  const size_t tokens = sh.tokens;  // local: int8_t stores may alias `sh`
  std::vector<float> amax(row, 0.0f);
  for (size_t t = 0; t < tokens; ++t) {
    const float* xt = x + t * row;
    for (size_t i = 0; i < row; ++i) amax[i] = std::max(amax[i], Abs(xt[i]));
  }
  std::vector<float> div(row);
  for (size_t i = 0; i < row; ++i) {
    s[i] = amax[i] / 127.0f;
    div[i] = Divisor(s[i]);
  }
  for (size_t t = 0; t < tokens; ++t) {
    for (size_t i = 0; i < row; ++i) q[t * row + i] = Int8Code(x[t * row + i], div[i]);
  }
}

// Largest |x[c]|, c < n, in 16 lanes so that the loop vectorises.
float AbsMax(const float* x, size_t n) {
  float lanes[internal::kLanes] = {};
  size_t i = 0;
  for (; i + internal::kLanes <= n; i += internal::kLanes) {
    for (size_t j = 0; j < internal::kLanes; ++j) lanes[j] = std::max(lanes[j], Abs(x[i + j]));
  }
  for (size_t j = 0; i + j < n; ++j) lanes[j] = std::max(lanes[j], Abs(x[i + j]));
  float m = 0.0f;
  for (float l : lanes) m = std::max(m, l);
  return m;
}

// Per (token, head): scale[t*heads + h] over the channels.
void QuantizePerToken(const float* x, const Shape& sh, bool fp8, uint8_t* q,
                      std::vector<float>& s) {
  const float qmax = fp8 ? kFp8E4M3Max : 127.0f;
  // Locals: the uint8_t stores below may alias anything, `sh` included.
  const size_t dim = sh.dim;
  const size_t groups = sh.tokens * sh.heads;
  for (size_t th = 0; th < groups; ++th) {
    const float* xr = x + th * dim;
    s[th] = AbsMax(xr, dim) / qmax;
    const float div = Divisor(s[th]);
    uint8_t* qr = q + th * dim;
    if (fp8) {
      for (size_t c = 0; c < dim; ++c) qr[c] = FloatToFp8E4M3(xr[c] / div);
    } else {
      for (size_t c = 0; c < dim; ++c) qr[c] = static_cast<uint8_t>(Int8Code(xr[c], div));
    }
  }
}

// x[g * dim + c] *= s[g] for the (token, head) groups g.
void ScalePerToken(float* x, const Shape& sh, const std::vector<float>& s) {
  for (size_t g = 0; g < sh.tokens * sh.heads; ++g) {
    for (size_t c = 0; c < sh.dim; ++c) x[g * sh.dim + c] *= s[g];
  }
}

void QuantizeOne(const PageQuantArgs& a, const Shape& sh, const char* src, char* dst,
                 std::vector<float>& buf, std::vector<float>& s1, std::vector<float>& s2) {
  const bool fp8 = a.quant_type == ScalarType::kFp8E4M3;
  const size_t e = sh.elems();
  internal::ToFloat(src, a.float_type, 0, 2 * e, buf.data());
  uint8_t* qk = reinterpret_cast<uint8_t*>(dst);
  uint8_t* qv = qk + e;
  if (fp8) {
    QuantizePerToken(buf.data(), sh, true, qk, s1);
  } else {
    QuantizePerChannel(buf.data(), sh, reinterpret_cast<int8_t*>(qk), s1);
  }
  QuantizePerToken(buf.data() + e, sh, fp8, qv, s2);
  PutScales(dst + 2 * e, s1);
  PutScales(dst + 2 * e + s1.size() * sizeof(float), s2);
}

void DequantizeOne(const PageQuantArgs& a, const Shape& sh, const char* src, char* dst,
                   std::vector<float>& buf, std::vector<float>& s1, std::vector<float>& s2) {
  const bool fp8 = a.quant_type == ScalarType::kFp8E4M3;
  const size_t e = sh.elems();
  GetScales(src + 2 * e, s1);
  GetScales(src + 2 * e + s1.size() * sizeof(float), s2);
  const uint8_t* q = reinterpret_cast<const uint8_t*>(src);
  // Codes to fp32, then times the scale of each element's group.
  if (fp8) {
    for (size_t i = 0; i < 2 * e; ++i) buf[i] = Fp8E4M3ToFloat(q[i]);
  } else {
    for (size_t i = 0; i < 2 * e; ++i) buf[i] = static_cast<float>(static_cast<int8_t>(q[i]));
  }
  const size_t row = sh.row();
  if (fp8) {
    ScalePerToken(buf.data(), sh, s1);
  } else {
    for (size_t t = 0; t < sh.tokens; ++t) {
      for (size_t i = 0; i < row; ++i) buf[t * row + i] *= s1[i];
    }
  }
  ScalePerToken(buf.data() + e, sh, s2);
  if (a.float_type == ScalarType::kF32) {
    std::memcpy(dst, buf.data(), 2 * e * sizeof(float));
  } else {
    uint16_t* out = reinterpret_cast<uint16_t*>(dst);
    if (a.float_type == ScalarType::kF16) {
      for (size_t i = 0; i < 2 * e; ++i) out[i] = FloatToHalf(buf[i]);
    } else {
      for (size_t i = 0; i < 2 * e; ++i) out[i] = FloatToBF16(buf[i]);
    }
  }
}

absl::Status Run(const PageQuantArgs& a, ThreadPool* pool, bool quantizing) {
  KVTIER_KERNELS_RETURN_IF_ERROR(a.Validate(quantizing));
  const Shape sh{a.page_size, a.n_kv_heads, a.head_dim};
  const bool fp8 = a.quant_type == ScalarType::kFp8E4M3;
  const size_t k_scales = fp8 ? sh.tokens * sh.heads : sh.row();
  const size_t v_scales = sh.tokens * sh.heads;
  internal::ParallelChunks(pool, a.n_pages, 1, [&](size_t begin, size_t end) {
    std::vector<float> buf(2 * sh.elems()), s1(k_scales), s2(v_scales);
    for (size_t i = begin; i < end; ++i) {
      const char* src = static_cast<const char*>(a.src) + i * a.src_stride_bytes;
      char* dst = static_cast<char*>(a.dst) + i * a.dst_stride_bytes;
      if (quantizing) {
        QuantizeOne(a, sh, src, dst, buf, s1, s2);
      } else {
        DequantizeOne(a, sh, src, dst, buf, s1, s2);
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace

size_t FloatPageBytes(uint32_t page_size, uint32_t n_kv_heads, uint32_t head_dim,
                      ScalarType float_type) {
  return 2 * size_t{page_size} * n_kv_heads * head_dim * ScalarBytes(float_type);
}

size_t QuantizedPageBytes(uint32_t page_size, uint32_t n_kv_heads, uint32_t head_dim,
                          ScalarType quant_type) {
  const size_t elems = size_t{page_size} * n_kv_heads * head_dim;
  const size_t per_token = size_t{page_size} * n_kv_heads;
  const size_t k_scales =
      quant_type == ScalarType::kInt8 ? size_t{n_kv_heads} * head_dim : per_token;
  return 2 * elems + (k_scales + per_token) * sizeof(float);
}

absl::Status PageQuantArgs::Validate(bool quantizing) const {
  using internal::CheckNotNull;
  using internal::CheckRange;
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckFloatType(kWhat, "float_type", float_type));
  if (quant_type != ScalarType::kInt8 && quant_type != ScalarType::kFp8E4M3) {
    return absl::InvalidArgumentError("PageQuant: quant_type must be int8 or fp8_e4m3");
  }
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "page_size", page_size, 1, internal::kMaxPageSize));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "n_kv_heads", n_kv_heads, 1, internal::kMaxKvHeads));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "head_dim", head_dim, 1, internal::kMaxHeadDim));
  const size_t fbytes = FloatPageBytes(page_size, n_kv_heads, head_dim, float_type);
  const size_t qbytes = QuantizedPageBytes(page_size, n_kv_heads, head_dim, quant_type);
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "src_stride_bytes", src_stride_bytes, quantizing ? fbytes : qbytes, kMax));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "dst_stride_bytes", dst_stride_bytes, quantizing ? qbytes : fbytes, kMax));
  if (n_pages == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "src", src));
  return CheckNotNull(kWhat, "dst", dst);
}

absl::Status QuantizePagesCpu(const PageQuantArgs& args, ThreadPool* pool) {
  return Run(args, pool, /*quantizing=*/true);
}

absl::Status DequantizePagesCpu(const PageQuantArgs& args, ThreadPool* pool) {
  return Run(args, pool, /*quantizing=*/false);
}

}  // namespace kvtier::kernels
