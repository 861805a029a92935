#include "kernels/quantize.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "common/page_layout.h"
#include "gtest/gtest.h"
#include "kernels/testing/test_util.h"

namespace kvtier::kernels {
namespace {

using testing::MakeTyped;
using testing::TypedBuffer;

struct Pages {
  uint32_t page_size = 16, heads = 4, dim = 64, n = 3;
  ScalarType float_type = ScalarType::kF16;
  ScalarType quant_type = ScalarType::kInt8;
  size_t Elems() const { return size_t{page_size} * heads * dim; }
  size_t FloatBytes() const { return FloatPageBytes(page_size, heads, dim, float_type); }
  size_t QuantBytes() const { return QuantizedPageBytes(page_size, heads, dim, quant_type); }
  PageQuantArgs Args(const void* src, size_t src_stride, void* dst, size_t dst_stride) const {
    PageQuantArgs a;
    a.page_size = page_size;
    a.n_kv_heads = heads;
    a.head_dim = dim;
    a.float_type = float_type;
    a.quant_type = quant_type;
    a.n_pages = n;
    a.src = src;
    a.src_stride_bytes = src_stride;
    a.dst = dst;
    a.dst_stride_bytes = dst_stride;
    return a;
  }
};

float ScaleAt(const std::vector<uint8_t>& q, size_t byte_offset) {
  float s;
  std::memcpy(&s, q.data() + byte_offset, sizeof(s));
  return s;
}

// ScalarType mirrors kvtier::DType so callers can cast between them.
static_assert(static_cast<int>(ScalarType::kF32) == static_cast<int>(DType::kF32));
static_assert(static_cast<int>(ScalarType::kF16) == static_cast<int>(DType::kF16));
static_assert(static_cast<int>(ScalarType::kBF16) == static_cast<int>(DType::kBF16));
static_assert(static_cast<int>(ScalarType::kFp8E4M3) == static_cast<int>(DType::kFp8E4M3));
static_assert(static_cast<int>(ScalarType::kInt8) == static_cast<int>(DType::kInt8));

TEST(QuantizeTest, PageBytesMatchCommonLayout) {
  for (ScalarType qt : {ScalarType::kInt8, ScalarType::kFp8E4M3}) {
    for (ScalarType ft : {ScalarType::kF16, ScalarType::kBF16, ScalarType::kF32}) {
      PageLayout l;
      l.page_size = 32;
      l.n_kv_heads = 8;
      l.head_dim = 128;
      l.dtype = static_cast<DType>(qt);
      ASSERT_TRUE(l.Validate().ok());
      EXPECT_EQ(QuantizedPageBytes(32, 8, 128, qt), l.PageBytes());
      l.dtype = static_cast<DType>(ft);
      EXPECT_EQ(FloatPageBytes(32, 8, 128, ft), l.PageBytes());
    }
  }
}

// Per element x of a group with scale s and group max |x| a, as quantize.h.
double Bound(ScalarType qt, double x, double s, double a) {
  const double slack = a * std::ldexp(1.0, -22);
  if (qt == ScalarType::kInt8) return s / 2 + slack;
  return std::max(std::abs(x) * std::ldexp(1.0, -4), s * std::ldexp(1.0, -10)) + slack;
}

class RoundTrip : public ::testing::TestWithParam<std::tuple<ScalarType, ScalarType, float>> {};

TEST_P(RoundTrip, DequantizedWithinStatedBoundAndScalesWhereLayoutSays) {
  Pages p;
  p.quant_type = std::get<0>(GetParam());
  p.float_type = std::get<1>(GetParam());
  const float outlier = std::get<2>(GetParam());
  const TypedBuffer src =
      MakeTyped(testing::AdversarialFloats(p.n * 2 * p.Elems(), 13, outlier), p.float_type);
  // Unaligned strides: pages sit at odd offsets, scales unaligned.
  const size_t qstride = p.QuantBytes() + 3;
  std::vector<uint8_t> q(p.n * qstride, 0xee);
  ThreadPool pool(3);
  ASSERT_TRUE(QuantizePagesCpu(p.Args(src.data(), p.FloatBytes(), q.data(), qstride), &pool).ok());
  Pages back = p;
  back.float_type = ScalarType::kF32;
  std::vector<float> deq(p.n * 2 * p.Elems(), NAN);
  ASSERT_TRUE(DequantizePagesCpu(
                  back.Args(q.data(), qstride, deq.data(), 2 * p.Elems() * sizeof(float)), &pool)
                  .ok());
  const size_t e = p.Elems(), row = size_t{p.heads} * p.dim;
  const bool fp8 = p.quant_type == ScalarType::kFp8E4M3;
  const size_t k_scales = fp8 ? size_t{p.page_size} * p.heads : row;
  for (size_t i = 0; i < p.n; ++i) {
    const float* x = src.values.data() + i * 2 * e;
    const float* y = deq.data() + i * 2 * e;
    const size_t scale_base = i * qstride + 2 * e;
    for (size_t j = 0; j < 2 * e; ++j) {
      const bool is_k = j < e;
      const size_t jj = is_k ? j : j - e;
      const size_t t = jj / row, h = (jj % row) / p.dim;
      double a = 0;  // group max |x|
      size_t scale_index;
      if (is_k && !fp8) {
        scale_index = jj % row;
        for (size_t u = 0; u < p.page_size; ++u)
          a = std::max<double>(a, std::abs(x[u * row + jj % row]));
      } else {
        scale_index = (is_k ? 0 : k_scales) + t * p.heads + h;
        const float* grp = x + (is_k ? 0 : e) + (t * p.heads + h) * p.dim;
        for (size_t c = 0; c < p.dim; ++c) a = std::max<double>(a, std::abs(grp[c]));
      }
      const float s = ScaleAt(q, scale_base + scale_index * sizeof(float));
      ASSERT_FLOAT_EQ(s, static_cast<float>(a / (fp8 ? 448.0 : 127.0))) << j;
      ASSERT_LE(std::abs(double{y[j]} - x[j]), Bound(p.quant_type, x[j], s, a)) << i << " " << j;
    }
  }
  // The stride padding is untouched.
  for (size_t i = 0; i < p.n; ++i) {
    for (size_t b = p.QuantBytes(); b < qstride; ++b) ASSERT_EQ(q[i * qstride + b], 0xee);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Types, RoundTrip,
    ::testing::Combine(::testing::Values(ScalarType::kInt8, ScalarType::kFp8E4M3),
                       ::testing::Values(ScalarType::kF16, ScalarType::kBF16, ScalarType::kF32),
                       ::testing::Values(8.0f, 60000.0f)));

TEST(QuantizeTest, ExtremeFiniteFp32ValuesRoundTrip) {
  for (ScalarType qt : {ScalarType::kInt8, ScalarType::kFp8E4M3}) {
    Pages p;
    p.n = 1;
    p.float_type = ScalarType::kF32;
    p.quant_type = qt;
    std::vector<float> x = testing::AdversarialFloats(2 * p.Elems(), 5, 3e38f);
    x[7] = 1e-30f;
    std::vector<uint8_t> q(p.QuantBytes());
    std::vector<float> y(x.size());
    ASSERT_TRUE(
        QuantizePagesCpu(p.Args(x.data(), p.FloatBytes(), q.data(), q.size()), nullptr).ok());
    ASSERT_TRUE(
        DequantizePagesCpu(p.Args(q.data(), q.size(), y.data(), p.FloatBytes()), nullptr).ok());
    for (size_t i = 0; i < x.size(); ++i) {
      ASSERT_TRUE(std::isfinite(y[i])) << i;
      // The group max is at most 3e38 * 4 sigma; half a step of 3e38 / 127.
      ASSERT_LE(std::abs(double{y[i]} - x[i]), 2e38 / 127 + std::abs(x[i]) / 16) << i;
    }
  }
}

TEST(QuantizeTest, ExactCodesAndZeroGroups) {
  Pages p;
  p.page_size = 2;
  p.heads = 1;
  p.dim = 2;
  p.n = 1;
  p.float_type = ScalarType::kF32;
  // K [2][1][2] = {127, 0}, {-63.5, 0}; V = {1, -2}, {0, 0}.
  std::vector<float> x = {127, 0, -63.5f, 0, 1, -2, 0, 0};
  std::vector<uint8_t> q(p.QuantBytes());
  ASSERT_TRUE(QuantizePagesCpu(p.Args(x.data(), 32, q.data(), q.size()), nullptr).ok());
  EXPECT_EQ(static_cast<int8_t>(q[0]), 127);
  EXPECT_EQ(static_cast<int8_t>(q[1]), 0);
  EXPECT_EQ(static_cast<int8_t>(q[2]), -64);  // -63.5 ties to even
  EXPECT_EQ(static_cast<int8_t>(q[4]), 64);   // 1 / (2/127) = 63.5 -> 64
  EXPECT_EQ(static_cast<int8_t>(q[5]), -127);
  EXPECT_EQ(q[6], 0);
  EXPECT_EQ(ScaleAt(q, 8), 1.0f);         // K channel 0 scale
  EXPECT_EQ(ScaleAt(q, 12), 0.0f);        // K channel 1 all zero
  EXPECT_EQ(ScaleAt(q, 16), 2.0f / 127);  // V token 0
  EXPECT_EQ(ScaleAt(q, 20), 0.0f);        // V token 1
  std::vector<float> y(8, NAN);
  ASSERT_TRUE(DequantizePagesCpu(p.Args(q.data(), q.size(), y.data(), 32), nullptr).ok());
  EXPECT_EQ(y[0], 127.0f);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[7], 0.0f);
}

TEST(QuantizeTest, RejectsBadArguments) {
  Pages p;
  std::vector<uint8_t> src(p.n * p.FloatBytes()), dst(p.n * p.QuantBytes(), 0x5a);
  PageQuantArgs a = p.Args(src.data(), p.FloatBytes(), dst.data(), p.QuantBytes() - 1);
  EXPECT_EQ(QuantizePagesCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.dst_stride_bytes = p.QuantBytes();
  a.quant_type = ScalarType::kF16;
  EXPECT_EQ(QuantizePagesCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.quant_type = ScalarType::kInt8;
  a.float_type = ScalarType::kInt8;
  EXPECT_EQ(QuantizePagesCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.float_type = ScalarType::kF16;
  a.head_dim = 0;
  EXPECT_EQ(QuantizePagesCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  for (uint8_t b : dst) ASSERT_EQ(b, 0x5a);
}

}  // namespace
}  // namespace kvtier::kernels
