#include "kernels/digest.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/testing/test_util.h"

namespace kvtier::kernels {
namespace {

using testing::MakeTyped;
using testing::TypedBuffer;

struct DigestCase {
  uint32_t page_size = 16, heads = 2, dim = 64, pages = 5;
  ScalarType key_type = ScalarType::kF16;
  DigestKind kind = DigestKind::kMinMax;
  ScalarType digest_type = ScalarType::kF32;
  uint32_t num_tokens = 0;
};

struct Result {
  TypedBuffer pool;
  std::vector<int32_t> ids, slots;
  std::vector<uint8_t> digests;
  DigestArgs args;
  absl::Status status;

  // Key value (page i of the listed pages, token t, head h, channel c).
  float Key(const DigestCase& s, size_t i, size_t t, size_t h, size_t c) const {
    const size_t page_elems = 2 * size_t{s.page_size} * s.heads * s.dim;
    return pool.values[ids[i] * page_elems + (t * s.heads + h) * s.dim + c];
  }
  float Digest(const DigestCase& s, size_t i, size_t h, size_t vec, size_t c) const {
    const size_t off = slots[i] * DigestSlotElements(s.kind, s.heads, s.dim) +
                       (h * DigestVectors(s.kind) + vec) * s.dim + c;
    return LoadAsFloat(digests.data(), s.digest_type, off);
  }
};

Result RunDigest(const DigestCase& s, const std::vector<float>& values) {
  Result r;
  r.pool = MakeTyped(values, s.key_type);
  const uint32_t pool_pages = s.pages + 3;
  for (uint32_t i = 0; i < s.pages; ++i) {
    r.ids.push_back(static_cast<int32_t>((i * 3 + 1) % pool_pages));
    r.slots.push_back(static_cast<int32_t>(s.pages - 1 - i));
  }
  r.digests.assign(
      s.pages * DigestSlotElements(s.kind, s.heads, s.dim) * ScalarBytes(s.digest_type), 0xcd);
  DigestArgs& a = r.args;
  a.pool = r.pool.data();
  a.page_stride_bytes = 2 * size_t{s.page_size} * s.heads * s.dim * ScalarBytes(s.key_type);
  a.pool_pages = pool_pages;
  a.key_type = s.key_type;
  a.page_size = s.page_size;
  a.n_kv_heads = s.heads;
  a.head_dim = s.dim;
  a.page_ids = r.ids.data();
  a.n_pages = s.pages;
  a.num_tokens = s.num_tokens;
  a.kind = s.kind;
  a.digests = r.digests.data();
  a.digest_type = s.digest_type;
  a.digest_slots = r.slots.data();
  a.digest_capacity = s.pages;
  ThreadPool pool(3);
  r.status = ComputeDigestsCpu(a, &pool);
  return r;
}

size_t PoolElems(const DigestCase& s) {
  return size_t{s.pages + 3} * 2 * s.page_size * s.heads * s.dim;
}

class MinMaxContainment
    : public ::testing::TestWithParam<std::tuple<ScalarType, ScalarType, float>> {};

TEST_P(MinMaxContainment, CuboidContainsEveryKeyAndTouchesIt) {
  DigestCase s;
  s.key_type = std::get<0>(GetParam());
  s.digest_type = std::get<1>(GetParam());
  const float outlier = std::get<2>(GetParam());
  const Result r = RunDigest(s, testing::AdversarialFloats(PoolElems(s), 7, outlier));
  ASSERT_TRUE(r.status.ok()) << r.status;
  for (size_t i = 0; i < s.pages; ++i) {
    for (size_t h = 0; h < s.heads; ++h) {
      for (size_t c = 0; c < s.dim; ++c) {
        const float hi = r.Digest(s, i, h, 0, c);
        const float lo = r.Digest(s, i, h, 1, c);
        float mx = -INFINITY, mn = INFINITY;
        for (size_t t = 0; t < s.page_size; ++t) {
          const float k = r.Key(s, i, t, h, c);
          ASSERT_LE(k, hi);
          ASSERT_GE(k, lo);
          mx = std::max(mx, k);
          mn = std::min(mn, k);
        }
        if (s.digest_type == ScalarType::kF32 || s.key_type == ScalarType::kF16) {
          ASSERT_EQ(hi, mx);  // exact: the max is representable
          ASSERT_EQ(lo, mn);
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Types, MinMaxContainment,
    ::testing::Values(std::make_tuple(ScalarType::kF32, ScalarType::kF32, 1e30f),
                      std::make_tuple(ScalarType::kF16, ScalarType::kF32, 65504.0f),
                      std::make_tuple(ScalarType::kBF16, ScalarType::kF32, 1e38f),
                      std::make_tuple(ScalarType::kF16, ScalarType::kF16, 60000.0f),
                      std::make_tuple(ScalarType::kF32, ScalarType::kF16, 1000.0f),
                      std::make_tuple(ScalarType::kBF16, ScalarType::kF16, 3.3f)));

TEST(DigestTest, Fp16DigestRoundsOutward) {
  DigestCase s;
  s.key_type = ScalarType::kF32;
  s.digest_type = ScalarType::kF16;
  s.page_size = 2;
  s.heads = 1;
  s.dim = 2;
  s.pages = 1;
  std::vector<float> v(PoolElems(s), 0.0f);
  const float up = 1.0f + std::ldexp(1.0f, -12);  // between two fp16 values
  // page id 1 holds the listed page; K [2 tokens][1 head][2 channels].
  const size_t base = 1 * 2 * 2 * 2;
  v[base + 0] = up;
  v[base + 1] = -up;
  v[base + 2] = -up;
  v[base + 3] = 1e-9f;
  const Result r = RunDigest(s, v);
  ASSERT_TRUE(r.status.ok()) << r.status;
  EXPECT_EQ(r.Digest(s, 0, 0, 0, 0), 1.0f + std::ldexp(1.0f, -10));
  EXPECT_EQ(r.Digest(s, 0, 0, 1, 0), -1.0f - std::ldexp(1.0f, -10));
  EXPECT_EQ(r.Digest(s, 0, 0, 0, 1), std::ldexp(1.0f, -24));  // up from 1e-9
  EXPECT_EQ(r.Digest(s, 0, 0, 1, 1), -1.0f - std::ldexp(1.0f, -10));
}

TEST(DigestTest, ArkvaleMeanAndCentroidKnownValues) {
  for (DigestKind kind : {DigestKind::kArkvaleMean, DigestKind::kCentroid}) {
    DigestCase s;
    s.key_type = ScalarType::kF32;
    s.kind = kind;
    s.page_size = 4;
    s.heads = 1;
    s.dim = 1;
    s.pages = 1;
    s.num_tokens = 3;  // the 4th token is not valid yet and must be ignored
    std::vector<float> v(PoolElems(s), 0.0f);
    const size_t base = 1 * 2 * 4;
    v[base + 0] = 1.0f;
    v[base + 1] = 3.0f;
    v[base + 2] = 8.0f;
    v[base + 3] = 1000.0f;
    const Result r = RunDigest(s, v);
    ASSERT_TRUE(r.status.ok()) << r.status;
    if (kind == DigestKind::kCentroid) {
      EXPECT_FLOAT_EQ(r.Digest(s, 0, 0, 0, 0), 4.0f);
    } else {
      // centre 4.5, mean |k - 4.5| = (3.5 + 1.5 + 3.5) / 3
      EXPECT_FLOAT_EQ(r.Digest(s, 0, 0, 0, 0), 4.5f + 8.5f / 3);
      EXPECT_FLOAT_EQ(r.Digest(s, 0, 0, 1, 0), 4.5f - 8.5f / 3);
    }
  }
}

TEST(DigestTest, ArkvaleMeanMatchesDoubleReference) {
  DigestCase s;
  s.kind = DigestKind::kArkvaleMean;
  s.key_type = ScalarType::kBF16;
  s.page_size = 32;
  s.heads = 4;
  s.dim = 128;
  const Result r = RunDigest(s, testing::RandomFloats(PoolElems(s), 11, -3.0f, 3.0f));
  ASSERT_TRUE(r.status.ok()) << r.status;
  for (size_t i = 0; i < s.pages; ++i) {
    for (size_t h = 0; h < s.heads; ++h) {
      for (size_t c = 0; c < s.dim; ++c) {
        double mx = -INFINITY, mn = INFINITY;
        for (size_t t = 0; t < s.page_size; ++t) {
          mx = std::max<double>(mx, r.Key(s, i, t, h, c));
          mn = std::min<double>(mn, r.Key(s, i, t, h, c));
        }
        const double centre = (mx + mn) / 2;
        double dev = 0;
        for (size_t t = 0; t < s.page_size; ++t) dev += std::abs(r.Key(s, i, t, h, c) - centre);
        dev /= s.page_size;
        ASSERT_NEAR(r.Digest(s, i, h, 0, c), centre + dev, 1e-5);
        ASSERT_NEAR(r.Digest(s, i, h, 1, c), centre - dev, 1e-5);
      }
    }
  }
}

TEST(DigestTest, RejectsBadInputWithoutWriting) {
  DigestCase s;
  std::vector<float> v(PoolElems(s), 1.0f);
  Result r = RunDigest(s, v);
  ASSERT_TRUE(r.status.ok());
  const std::vector<uint8_t> before = r.digests;
  DigestArgs a = r.args;
  r.ids[2] = static_cast<int32_t>(a.pool_pages);  // out of the pool
  ThreadPool pool(2);
  absl::Status st = ComputeDigestsCpu(a, &pool);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("page_ids[2]"), std::string::npos) << st;
  r.ids[2] = 0;
  r.slots[0] = -1;
  EXPECT_EQ(ComputeDigestsCpu(a, &pool).code(), absl::StatusCode::kInvalidArgument);
  r.slots[0] = 4;
  a.num_tokens = a.page_size + 1;
  EXPECT_EQ(ComputeDigestsCpu(a, &pool).code(), absl::StatusCode::kInvalidArgument);
  a.num_tokens = 0;
  a.key_type = ScalarType::kInt8;
  EXPECT_EQ(ComputeDigestsCpu(a, &pool).code(), absl::StatusCode::kInvalidArgument);
  a.key_type = ScalarType::kF16;
  a.page_stride_bytes = 8;
  EXPECT_EQ(ComputeDigestsCpu(a, &pool).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(r.digests, before);
}

}  // namespace
}  // namespace kvtier::kernels
