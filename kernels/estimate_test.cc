#include "kernels/estimate.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/digest.h"
#include "kernels/testing/test_util.h"

namespace kvtier::kernels {
namespace {

using testing::MakeTyped;
using testing::TypedBuffer;

// A batch of sequences whose pages sit in one pool, digested with `kind`.
struct Batch {
  uint32_t page_size, hkv, hq, dim;
  ScalarType key_type;
  DigestKind kind;
  ScalarType digest_type;
  std::vector<uint32_t> seq_pages;

  // Built by Build().
  TypedBuffer pool{}, queries{};
  std::vector<int32_t> indptr{}, slots{}, page_ids{};
  std::vector<uint8_t> digests{};
  std::vector<float> scores{};

  size_t PageElems() const { return 2 * size_t{page_size} * hkv * dim; }
  float Key(size_t page, size_t t, size_t h, size_t c) const {
    return pool.values[page_ids[page] * PageElems() + (t * hkv + h) * dim + c];
  }
  float Q(size_t b, size_t h, size_t c) const { return queries.values[(b * hq + h) * dim + c]; }

  void Build(uint32_t seed, float outlier) {
    indptr = {0};
    for (uint32_t n : seq_pages) indptr.push_back(indptr.back() + static_cast<int32_t>(n));
    const uint32_t total = indptr.back();
    pool =
        MakeTyped(testing::AdversarialFloats(size_t{total} * PageElems(), seed, outlier), key_type);
    queries = MakeTyped(testing::AdversarialFloats(seq_pages.size() * hq * dim, seed + 1, 4.0f),
                        ScalarType::kF32);
    for (uint32_t p = 0; p < total; ++p) {
      page_ids.push_back(static_cast<int32_t>((p * 7 + 3) % total));  // a permutation if gcd=1
      slots.push_back(static_cast<int32_t>(total - 1 - p));
    }
    if (total % 7 == 0) {
      for (uint32_t p = 0; p < total; ++p) page_ids[p] = static_cast<int32_t>(p);
    }
    digests.resize(total * DigestSlotElements(kind, hkv, dim) * ScalarBytes(digest_type));
    DigestArgs d;
    d.pool = pool.data();
    d.page_stride_bytes = PageElems() * ScalarBytes(key_type);
    d.pool_pages = total;
    d.key_type = key_type;
    d.page_size = page_size;
    d.n_kv_heads = hkv;
    d.head_dim = dim;
    d.page_ids = page_ids.data();
    d.n_pages = total;
    d.kind = kind;
    d.digests = digests.data();
    d.digest_type = digest_type;
    d.digest_slots = slots.data();
    d.digest_capacity = total;
    ASSERT_TRUE(ComputeDigestsCpu(d, nullptr).ok());
  }

  EstimateArgs Args(HeadReduce reduce) {
    EstimateArgs a;
    a.queries = queries.data();
    a.query_type = ScalarType::kF32;
    a.batch = static_cast<uint32_t>(seq_pages.size());
    a.n_q_heads = hq;
    a.n_kv_heads = hkv;
    a.head_dim = dim;
    a.digests = digests.data();
    a.digest_type = digest_type;
    a.kind = kind;
    a.digest_capacity = static_cast<uint32_t>(slots.size());
    a.page_indptr = indptr.data();
    a.digest_slots = slots.data();
    a.total_pages = static_cast<uint32_t>(slots.size());
    a.reduce = reduce;
    scores.assign(a.total_pages * a.rows(), NAN);
    a.scores = scores.data();
    return a;
  }

  float Score(HeadReduce reduce, size_t b, size_t row, size_t i) const {
    const size_t rows = reduce == HeadReduce::kGroupSum ? hkv : hq;
    const size_t n = seq_pages[b];
    return scores[indptr[b] * rows + row * n + i];
  }
};

class UpperBound : public ::testing::TestWithParam<std::tuple<uint32_t, uint32_t, ScalarType>> {};

// For the min/max cuboid, each query head's score bounds max_t q.k_t of the
// page from above, and the group sum bounds the sum of the heads' maxima.
TEST_P(UpperBound, MinMaxScoreBoundsEveryTokenDot) {
  Batch bt{.page_size = std::get<0>(GetParam()),
           .hkv = 2,
           .hq = 2 * std::get<1>(GetParam()),
           .dim = 64,
           .key_type = std::get<2>(GetParam()),
           .kind = DigestKind::kMinMax,
           .digest_type = ScalarType::kF32,
           .seq_pages = {3, 1, 6}};
  bt.Build(5, 50.0f);
  ThreadPool pool(2);
  EstimateArgs per_head = bt.Args(HeadReduce::kPerQueryHead);
  ASSERT_TRUE(EstimateScoresCpu(per_head, &pool).ok());
  const std::vector<float> head_scores = bt.scores;
  EstimateArgs grouped = bt.Args(HeadReduce::kGroupSum);
  ASSERT_TRUE(EstimateScoresCpu(grouped, &pool).ok());
  const uint32_t group = bt.hq / bt.hkv;
  for (size_t b = 0; b < bt.seq_pages.size(); ++b) {
    const size_t n = bt.seq_pages[b];
    for (size_t i = 0; i < n; ++i) {
      const size_t page = bt.indptr[b] + i;
      for (size_t g = 0; g < bt.hkv; ++g) {
        double group_max_sum = 0, group_score_sum = 0;
        for (size_t j = 0; j < group; ++j) {
          const size_t h = g * group + j;
          double best = -INFINITY;
          for (size_t t = 0; t < bt.page_size; ++t) {
            double dot = 0;
            for (size_t c = 0; c < bt.dim; ++c) {
              dot += double{bt.Q(b, h, c)} * bt.Key(page, t, g, c);
            }
            best = std::max(best, dot);
          }
          // Magnitude of the score's terms: sum_c |q_c| max_t |k_tc|.
          double mag = 0;
          for (size_t c = 0; c < bt.dim; ++c) {
            double kmax = 0;
            for (size_t t = 0; t < bt.page_size; ++t) {
              kmax = std::max<double>(kmax, std::abs(bt.Key(page, t, g, c)));
            }
            mag += std::abs(double{bt.Q(b, h, c)}) * kmax;
          }
          const float s = head_scores[bt.indptr[b] * bt.hq + h * n + i];
          // fp32 summation of d terms: allow d * 2^-24 of the magnitude.
          ASSERT_GE(s, best - 1e-5 * mag) << b << " " << i << " " << h;
          group_max_sum += best;
          group_score_sum += s;
        }
        ASSERT_NEAR(bt.Score(HeadReduce::kGroupSum, b, g, i), group_score_sum,
                    1e-5 * std::abs(group_score_sum) + 1e-4);
        ASSERT_GE(bt.Score(HeadReduce::kGroupSum, b, g, i),
                  group_max_sum - 1e-5 * std::abs(group_max_sum) - 1e-4);
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, UpperBound,
                         ::testing::Combine(::testing::Values(16u, 32u), ::testing::Values(1u, 4u),
                                            ::testing::Values(ScalarType::kF16,
                                                              ScalarType::kBF16)));

TEST(EstimateTest, KnownCuboidAndCentroidValues) {
  // One page, one head, d = 2: q = (1, -2), keys (3, 1) and (-1, 4).
  for (DigestKind kind : {DigestKind::kMinMax, DigestKind::kCentroid}) {
    Batch bt{.page_size = 2,
             .hkv = 1,
             .hq = 1,
             .dim = 2,
             .key_type = ScalarType::kF32,
             .kind = kind,
             .digest_type = ScalarType::kF32,
             .seq_pages = {1}};
    bt.Build(1, 1.0f);
    bt.pool.values = {3, 1, -1, 4, 0, 0, 0, 0};
    bt.pool = MakeTyped(bt.pool.values, ScalarType::kF32);
    bt.queries = MakeTyped({1, -2}, ScalarType::kF32);
    DigestArgs d;
    d.pool = bt.pool.data();
    d.page_stride_bytes = 32;
    d.pool_pages = 1;
    d.key_type = ScalarType::kF32;
    d.page_size = 2;
    d.n_kv_heads = 1;
    d.head_dim = 2;
    d.page_ids = bt.page_ids.data();
    d.n_pages = 1;
    d.kind = kind;
    d.digests = bt.digests.data();
    d.digest_slots = bt.slots.data();
    d.digest_capacity = 1;
    ASSERT_TRUE(ComputeDigestsCpu(d, nullptr).ok());
    EstimateArgs a = bt.Args(HeadReduce::kGroupSum);
    ASSERT_TRUE(EstimateScoresCpu(a, nullptr).ok());
    // cuboid: hi = (3, 4), lo = (-1, 1): max(3, -1) + max(-8, -2) = 1.
    // centroid: (1, 2.5): 1 - 5 = -4.
    EXPECT_EQ(bt.scores[0], kind == DigestKind::kMinMax ? 1.0f : -4.0f);
  }
}

TEST(EstimateTest, MatchesDoubleReferenceForEveryKindAndDigestType) {
  for (DigestKind kind : {DigestKind::kMinMax, DigestKind::kArkvaleMean, DigestKind::kCentroid}) {
    for (ScalarType dt : {ScalarType::kF32, ScalarType::kF16}) {
      Batch bt{.page_size = 16,
               .hkv = 4,
               .hq = 32,
               .dim = 128,
               .key_type = ScalarType::kF16,
               .kind = kind,
               .digest_type = dt,
               .seq_pages = {9, 0, 17}};
      bt.Build(9, 8.0f);
      ThreadPool pool(4);
      EstimateArgs a = bt.Args(HeadReduce::kPerQueryHead);
      ASSERT_TRUE(EstimateScoresCpu(a, &pool).ok());
      const size_t slot_elems = DigestSlotElements(kind, bt.hkv, bt.dim);
      const uint32_t vecs = DigestVectors(kind);
      for (size_t b = 0; b < 3; ++b) {
        for (size_t i = 0; i < bt.seq_pages[b]; ++i) {
          const size_t page = bt.indptr[b] + i;
          for (size_t h = 0; h < bt.hq; ++h) {
            const size_t g = h / (bt.hq / bt.hkv);
            const size_t base = bt.slots[page] * slot_elems + g * vecs * bt.dim;
            double ref = 0, mag = 0;
            for (size_t c = 0; c < bt.dim; ++c) {
              const double q = bt.Q(b, h, c);
              const double hi = LoadAsFloat(bt.digests.data(), dt, base + c);
              const double lo =
                  vecs == 2 ? LoadAsFloat(bt.digests.data(), dt, base + bt.dim + c) : hi;
              ref += vecs == 2 ? std::max(q * hi, q * lo) : q * hi;
              mag += std::abs(q * hi) + std::abs(q * lo);
            }
            ASSERT_NEAR(bt.Score(HeadReduce::kPerQueryHead, b, h, i), ref, 1e-6 * mag + 1e-6);
          }
        }
      }
    }
  }
}

TEST(EstimateTest, RejectsBadIndptrAndSlots) {
  Batch bt{.page_size = 16,
           .hkv = 1,
           .hq = 1,
           .dim = 8,
           .key_type = ScalarType::kF16,
           .kind = DigestKind::kMinMax,
           .digest_type = ScalarType::kF32,
           .seq_pages = {2, 2}};
  bt.Build(3, 1.0f);
  EstimateArgs a = bt.Args(HeadReduce::kGroupSum);
  ASSERT_TRUE(a.ValidateHostArrays().ok());
  bt.indptr[1] = 3;
  bt.indptr[2] = 2;
  EXPECT_EQ(a.ValidateHostArrays().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EstimateScoresCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bt.indptr = {0, 2, 4};
  a.page_indptr = bt.indptr.data();
  bt.slots[3] = 4;
  EXPECT_EQ(a.ValidateHostArrays().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EstimateScoresCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  bt.slots[3] = 0;
  ASSERT_TRUE(a.ValidateHostArrays().ok());
  a.n_q_heads = 3;
  a.n_kv_heads = 2;
  EXPECT_EQ(EstimateScoresCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  for (float s : bt.scores) EXPECT_TRUE(std::isnan(s));  // nothing written
}

}  // namespace
}  // namespace kvtier::kernels
