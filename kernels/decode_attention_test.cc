#include "kernels/decode_attention.h"

#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/testing/test_util.h"

namespace kvtier::kernels {
namespace {

using testing::MakeTyped;
using testing::TypedBuffer;

// A pool of random pages, a batch of sequences with shuffled page lists and
// partial last pages, and the dense double reference.
struct Problem {
  uint32_t page_size = 16, hkv = 2, group = 4, dim = 64;
  ScalarType kv_type = ScalarType::kF16;
  bool per_head = false;
  std::vector<uint32_t> tokens = {100, 16, 1};  // tokens per sequence (list)
  float key_scale = 1.0f;

  TypedBuffer pool, queries;
  std::vector<int32_t> indptr, indices, last_len;
  uint32_t pool_pages = 0;
  std::vector<float> out, lse;

  uint32_t hq() const { return hkv * group; }
  size_t PageElems() const { return 2 * size_t{page_size} * hkv * dim; }
  uint32_t Lists() const { return per_head ? hkv : 1; }

  void Build(uint32_t seed) {
    std::mt19937 rng(seed);
    indptr = {0};
    std::vector<uint32_t> pages_per_seq;
    for (uint32_t t : tokens) pages_per_seq.push_back((t + page_size - 1) / page_size);
    pool_pages = 1;
    for (uint32_t p : pages_per_seq) pool_pages += p * Lists();
    std::vector<int32_t> perm(pool_pages);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    size_t next = 0;
    for (size_t b = 0; b < tokens.size(); ++b) {
      for (uint32_t l = 0; l < Lists(); ++l) {
        for (uint32_t p = 0; p < pages_per_seq[b]; ++p) indices.push_back(perm[next++]);
        indptr.push_back(static_cast<int32_t>(indices.size()));
      }
      last_len.push_back(static_cast<int32_t>(tokens[b] - (pages_per_seq[b] - 1) * page_size));
    }
    std::vector<float> v = testing::AdversarialFloats(pool_pages * PageElems(), seed, 6.0f);
    for (size_t i = 0; i < v.size(); ++i) {
      if ((i / (PageElems() / 2)) % 2 == 0) v[i] *= key_scale;  // K halves
    }
    pool = MakeTyped(v, kv_type);
    queries = MakeTyped(testing::RandomFloats(tokens.size() * hq() * dim, seed + 1), kv_type);
  }

  DecodeAttentionArgs Args(uint32_t splits) {
    DecodeAttentionArgs a;
    a.queries = queries.data();
    a.query_type = kv_type;
    a.batch = static_cast<uint32_t>(tokens.size());
    a.n_q_heads = hq();
    a.sm_scale = 1.0f / std::sqrt(static_cast<float>(dim));
    a.kv.pool = pool.data();
    a.kv.kv_type = kv_type;
    a.kv.page_size = page_size;
    a.kv.n_kv_heads = hkv;
    a.kv.head_dim = dim;
    a.kv.page_stride_bytes = PageElems() * ScalarBytes(kv_type);
    a.kv.pool_pages = pool_pages;
    a.kv.per_head_lists = per_head;
    a.kv.indptr = indptr.data();
    a.kv.indices = indices.data();
    a.kv.last_page_len = last_len.data();
    a.kv.total_entries = static_cast<uint32_t>(indices.size());
    a.num_splits = splits;
    out.assign(size_t{a.batch} * hq() * dim, NAN);
    lse.assign(size_t{a.batch} * hq(), NAN);
    a.out = out.data();
    a.lse = lse.data();
    return a;
  }

  // Largest |out - ref| over all outputs relative to max |v|, and largest
  // |lse - ref|.
  void Compare(double* out_err, double* lse_err) const {
    *out_err = 0;
    *lse_err = 0;
    const double scale = 1.0 / std::sqrt(static_cast<double>(dim));
    for (size_t b = 0; b < tokens.size(); ++b) {
      for (uint32_t h = 0; h < hq(); ++h) {
        const uint32_t g = h / group;
        const uint32_t list = static_cast<uint32_t>(b) * Lists() + (per_head ? g : 0);
        std::vector<const float*> ks, vs;
        double vmax = 0;
        for (int32_t e = indptr[list]; e < indptr[list + 1]; ++e) {
          const uint32_t n = e == indptr[list + 1] - 1 ? last_len[b] : page_size;
          const float* page = pool.values.data() + indices[e] * PageElems();
          for (uint32_t t = 0; t < n; ++t) {
            ks.push_back(page + (t * hkv + g) * dim);
            vs.push_back(page + PageElems() / 2 + (t * hkv + g) * dim);
            for (uint32_t c = 0; c < dim; ++c)
              vmax = std::max<double>(vmax, std::abs(vs.back()[c]));
          }
        }
        std::vector<double> ref(dim);
        double ref_lse;
        testing::ReferenceAttention(queries.values.data() + (b * hq() + h) * dim, ks.data(),
                                    vs.data(), ks.size(), dim, scale, ref.data(), &ref_lse);
        const size_t row = b * hq() + h;
        for (uint32_t c = 0; c < dim; ++c) {
          *out_err = std::max(*out_err, std::abs(out[row * dim + c] - ref[c]) / vmax);
        }
        *lse_err = std::max(*lse_err, std::abs(lse[row] - ref_lse));
      }
    }
  }
};

// Tolerances: fp32 accumulation over up to 128K tokens; errors relative to
// max |v| for the output, absolute for the log-sum-exp.
constexpr double kOutTol = 2e-5;
constexpr double kLseTol = 2e-5;

class DenseEquivalence
    : public ::testing::TestWithParam<std::tuple<uint32_t, uint32_t, uint32_t, ScalarType, bool>> {
};

TEST_P(DenseEquivalence, AllPagesEqualDenseSoftmaxAttention) {
  Problem p;
  p.page_size = std::get<0>(GetParam());
  p.group = std::get<1>(GetParam());
  p.dim = std::get<2>(GetParam());
  p.kv_type = std::get<3>(GetParam());
  p.per_head = std::get<4>(GetParam());
  p.tokens = {300, p.page_size, 1, 77};
  p.Build(3);
  ThreadPool pool(3);
  for (uint32_t splits : {1u, 3u, 16u}) {
    DecodeAttentionArgs a = p.Args(splits);
    ASSERT_TRUE(DecodeAttentionCpu(a, &pool).ok());
    double out_err, lse_err;
    p.Compare(&out_err, &lse_err);
    EXPECT_LT(out_err, kOutTol) << splits;
    EXPECT_LT(lse_err, kLseTol) << splits;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, DenseEquivalence,
    ::testing::Combine(::testing::Values(16u, 32u), ::testing::Values(1u, 4u, 8u),
                       ::testing::Values(64u, 128u),
                       ::testing::Values(ScalarType::kF16, ScalarType::kBF16, ScalarType::kF32),
                       ::testing::Bool()));

TEST(DecodeAttentionTest, LongContextAndExtremeLogitsStayFinite) {
  Problem p;
  p.page_size = 32;
  p.hkv = 1;
  p.group = 8;
  p.dim = 128;
  p.kv_type = ScalarType::kBF16;
  p.tokens = {131072 - 5};
  p.key_scale = 300.0f;  // logits in the thousands: softmax is nearly one-hot
  p.Build(9);
  ThreadPool pool(0);
  DecodeAttentionArgs a = p.Args(8);
  ASSERT_TRUE(DecodeAttentionCpu(a, &pool).ok());
  for (float x : p.out) ASSERT_TRUE(std::isfinite(x));
  double out_err, lse_err;
  p.Compare(&out_err, &lse_err);
  EXPECT_LT(out_err, kOutTol);
  EXPECT_LT(lse_err, 1e-6 * 1e4);  // lse is in the thousands: relative fp32 error
}

TEST(DecodeAttentionTest, SplitStatesMergeToTheWhole) {
  Problem p;
  p.tokens = {500};
  p.Build(21);
  DecodeAttentionArgs whole = p.Args(1);
  ASSERT_TRUE(DecodeAttentionCpu(whole, nullptr).ok());
  const std::vector<float> want_out = p.out, want_lse = p.lse;
  // Attend the first 10 pages and the rest separately (the partial last page
  // stays last in its part), then merge with the exposed kernel.
  const std::vector<int32_t> all = p.indices;
  const uint32_t rows = p.hq(), d = p.dim;
  std::vector<float> states_out(rows * 2 * d), states_lse(rows * 2);
  for (int part = 0; part < 2; ++part) {
    p.indices.assign(part == 0 ? all.begin() : all.begin() + 10,
                     part == 0 ? all.begin() + 10 : all.end());
    p.indptr = {0, static_cast<int32_t>(p.indices.size())};
    const int32_t saved_len = p.last_len[0];
    if (part == 0) p.last_len[0] = static_cast<int32_t>(p.page_size);
    DecodeAttentionArgs a = p.Args(1);
    ASSERT_TRUE(DecodeAttentionCpu(a, nullptr).ok());
    p.last_len[0] = saved_len;
    for (uint32_t r = 0; r < rows; ++r) {
      std::copy_n(p.out.begin() + r * d, d, states_out.begin() + (r * 2 + part) * d);
      states_lse[r * 2 + part] = p.lse[r];
    }
  }
  std::vector<float> out(rows * d), lse(rows);
  MergeStatesArgs m{states_out.data(), states_lse.data(), rows, 2, d, out.data(), lse.data()};
  ASSERT_TRUE(MergeAttentionStatesCpu(m, nullptr).ok());
  for (size_t i = 0; i < out.size(); ++i) EXPECT_NEAR(out[i], want_out[i], 1e-5);
  for (size_t i = 0; i < lse.size(); ++i) EXPECT_NEAR(lse[i], want_lse[i], 1e-5);
}

TEST(MergeStatesTest, KnownValuesAndEmptyStates) {
  // Two states of d = 1: lse log 1 and log 3 -> weights 1/4, 3/4.
  const float ninf = -INFINITY;
  std::vector<float> so = {2.0f, 6.0f, 5.0f, 7.0f, 1.0f, 1.0f};
  std::vector<float> sl = {0.0f, std::log(3.0f), ninf, 1.5f, ninf, ninf};
  std::vector<float> out(3), lse(3);
  MergeStatesArgs m{so.data(), sl.data(), 3, 2, 1, out.data(), lse.data()};
  ASSERT_TRUE(MergeAttentionStatesCpu(m, nullptr).ok());
  EXPECT_FLOAT_EQ(out[0], 0.25f * 2 + 0.75f * 6);
  EXPECT_FLOAT_EQ(lse[0], std::log(4.0f));
  EXPECT_FLOAT_EQ(out[1], 7.0f);  // the empty state adds nothing
  EXPECT_FLOAT_EQ(lse[1], 1.5f);
  EXPECT_EQ(out[2], 0.0f);
  EXPECT_EQ(lse[2], ninf);
}

TEST(DecodeAttentionTest, EmptyListGivesZeroAndMinusInfinity) {
  Problem p;
  p.per_head = true;
  p.tokens = {40};
  p.Build(2);
  // Empty the list of KV head 1.
  p.indices.resize(p.indptr[1]);
  p.indptr[2] = p.indptr[1];
  DecodeAttentionArgs a = p.Args(2);
  ASSERT_TRUE(DecodeAttentionCpu(a, nullptr).ok());
  for (uint32_t h = p.group; h < 2 * p.group; ++h) {
    EXPECT_EQ(p.lse[h], -INFINITY);
    for (uint32_t c = 0; c < p.dim; ++c) EXPECT_EQ(p.out[h * p.dim + c], 0.0f);
  }
  EXPECT_TRUE(std::isfinite(p.lse[0]));
}

TEST(DecodeAttentionTest, RejectsBadListsWithoutWriting) {
  Problem p;
  p.Build(4);
  DecodeAttentionArgs a = p.Args(1);
  ASSERT_TRUE(a.ValidateHostArrays().ok());
  // The list checks a device dispatch runs before staging (ValidateHostArrays)
  // are the CPU kernel's.
  p.indices[3] = static_cast<int32_t>(p.pool_pages);
  EXPECT_EQ(a.ValidateHostArrays().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DecodeAttentionCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  p.indices[3] = -1;
  EXPECT_EQ(a.ValidateHostArrays().code(), absl::StatusCode::kInvalidArgument);
  p.indices[3] = 0;
  for (int32_t bad : {0, -1, static_cast<int32_t>(p.page_size) + 1}) {
    p.last_len[1] = bad;
    EXPECT_EQ(a.ValidateHostArrays().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(DecodeAttentionCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  p.last_len[1] = 1;
  ASSERT_TRUE(a.ValidateHostArrays().ok());
  std::swap(p.indptr[1], p.indptr[2]);  // decreasing
  EXPECT_EQ(a.ValidateHostArrays().code(), absl::StatusCode::kInvalidArgument);
  std::swap(p.indptr[1], p.indptr[2]);
  a.n_q_heads = 3;
  EXPECT_EQ(DecodeAttentionCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.n_q_heads = p.hq();
  a.sm_scale = NAN;
  EXPECT_EQ(DecodeAttentionCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.sm_scale = 1.0f;
  a.num_splits = 0;
  EXPECT_EQ(DecodeAttentionCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  a.num_splits = 2;
  a.workspace = p.out.data();
  a.workspace_bytes = 4;  // too small
  EXPECT_EQ(DecodeAttentionCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  for (float x : p.out) EXPECT_TRUE(std::isnan(x));
}

}  // namespace
}  // namespace kvtier::kernels
