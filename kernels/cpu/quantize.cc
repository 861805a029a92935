#include "kernels/quantize.h"

#include <algorithm>
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

inline float Abs(float x) { return x < 0.0f ? -x : x; }

// int8 code of x / s; |x / s| <= 127 up to one fp32 rounding.
inline int8_t Int8Code(float x, float s) {
  // Division, not x * (1/s): one rounding keeps the stated bound.
  float y = s > 0.0f ? x / s : 0.0f;
  y = std::clamp(y, -127.0f, 127.0f);
  return static_cast<int8_t>(RoundHalfEven(y));
}

inline uint8_t Fp8Code(float x, float s) {
  return FloatToFp8E4M3(s > 0.0f ? x / s : 0.0f);
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
  std::vector<float> amax(row, 0.0f);
  for (size_t t = 0; t < sh.tokens; ++t) {
    const float* xt = x + t * row;
    for (size_t i = 0; i < row; ++i) amax[i] = std::max(amax[i], Abs(xt[i]));
  }
  for (size_t i = 0; i < row; ++i) s[i] = amax[i] / 127.0f;
  for (size_t t = 0; t < sh.tokens; ++t) {
    for (size_t i = 0; i < row; ++i) q[t * row + i] = Int8Code(x[t * row + i], s[i]);
  }
}

// Per (token, head): scale[t*heads + h] over the channels.
void QuantizePerToken(const float* x, const Shape& sh, bool fp8, uint8_t* q,
                      std::vector<float>& s) {
  const float qmax = fp8 ? kFp8E4M3Max : 127.0f;
  for (size_t th = 0; th < sh.tokens * sh.heads; ++th) {
    const float* xr = x + th * sh.dim;
    float amax = 0.0f;
    for (size_t c = 0; c < sh.dim; ++c) amax = std::max(amax, Abs(xr[c]));
    const float scale = amax / qmax;
    s[th] = scale;
    uint8_t* qr = q + th * sh.dim;
    if (fp8) {
      for (size_t c = 0; c < sh.dim; ++c) qr[c] = Fp8Code(xr[c], scale);
    } else {
      for (size_t c = 0; c < sh.dim; ++c) {
        qr[c] = static_cast<uint8_t>(Int8Code(xr[c], scale));
      }
    }
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
  auto code = [fp8](uint8_t v) {
    return fp8 ? Fp8E4M3ToFloat(v) : static_cast<float>(static_cast<int8_t>(v));
  };
  const size_t row = sh.row();
  for (size_t i = 0; i < e; ++i) {
    const float scale = fp8 ? s1[i / sh.dim] : s1[i % row];  // K
    buf[i] = code(q[i]) * scale;
  }
  for (size_t i = 0; i < e; ++i) buf[e + i] = code(q[e + i]) * s2[i / sh.dim];  // V
  if (a.float_type == ScalarType::kF32) {
    std::memcpy(dst, buf.data(), 2 * e * sizeof(float));
  } else {
    for (size_t i = 0; i < 2 * e; ++i) StoreFromFloat(dst, a.float_type, i, buf[i]);
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
  const size_t k_scales = quant_type == ScalarType::kInt8 ? size_t{n_kv_heads} * head_dim
                                                          : per_token;
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
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "head_dim", head_dim, 1, internal::kMaxHeadDim));
  const size_t fbytes = FloatPageBytes(page_size, n_kv_heads, head_dim, float_type);
  const size_t qbytes = QuantizedPageBytes(page_size, n_kv_heads, head_dim, quant_type);
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "src_stride_bytes", src_stride_bytes,
                                            quantizing ? fbytes : qbytes, kMax));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "dst_stride_bytes", dst_stride_bytes,
                                            quantizing ? qbytes : fbytes, kMax));
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
