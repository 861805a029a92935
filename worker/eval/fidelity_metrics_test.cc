// Hand-made keys and queries whose attention, digests and rankings are known
// in closed form.
#include "worker/eval/fidelity_metrics.h"

#include <cmath>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::eval {
namespace {

using ::testing::ElementsAre;
using ::testing::DoubleNear;
using ::testing::FloatNear;

TEST(ExactPageAttentionTest, ProbabilitiesPerPage) {
  // One head, d = 1, q = 1: scores are the keys. exp: 1, 1, 2, 1, 1 (sum 6).
  const AttentionGeometry g{1, 1, 1, 2};
  const std::vector<float> keys = {0, 0, std::log(2.0f), 0, 0};
  auto a = ExactPageAttention(g, keys, std::vector<float>{1});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->full_pages, 2u);  // the fifth token's page is partial
  EXPECT_THAT(a->max_prob, ElementsAre(DoubleNear(1 / 6.0, 1e-7), DoubleNear(2 / 6.0, 1e-7)));
  EXPECT_THAT(a->mass, ElementsAre(DoubleNear(2 / 6.0, 1e-7), DoubleNear(3 / 6.0, 1e-7)));
}

TEST(ExactPageAttentionTest, ImportanceAveragesTheHeadsMaxima) {
  // Two query heads on one KV head, d = 1, page of 2: head 0 (q = 1) puts
  // 2/3 on token 1, head 1 (q = -1) puts 2/3 on token 0.
  const AttentionGeometry g{2, 1, 1, 2};
  const std::vector<float> keys = {0, std::log(2.0f)};
  auto a = ExactPageAttention(g, keys, std::vector<float>{1, -1});
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->max_prob, ElementsAre(DoubleNear(2 / 3.0, 1e-6)));
  EXPECT_THAT(a->mass, ElementsAre(DoubleNear(1.0, 1e-9)));
}

TEST(ExactPageAttentionTest, RejectsBadShapes) {
  EXPECT_EQ(ExactPageAttention({2, 3, 1, 2}, std::vector<float>{1}, std::vector<float>{1, 1})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ExactPageAttention({1, 1, 2, 2}, std::vector<float>{1, 2, 3},
                               std::vector<float>{1, 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DigestPageRowsTest, EachKindOnKnownKeys) {
  // d = 2, pages of 2: page 0 keys (1,0), (0,1); page 1 keys (2,2), (2,2).
  const AttentionGeometry g{1, 1, 2, 2};
  const std::vector<float> keys = {1, 0, 0, 1, 2, 2, 2, 2};
  const std::vector<float> q = {1, -1};
  // min/max: page 0 hi (1,1) lo (0,0) -> 1 + 0; page 1 hi = lo = (2,2) -> 2 - 2.
  auto mm = DigestPageRows(g, kernels::DigestKind::kMinMax, keys, q, Selection::kShared);
  ASSERT_TRUE(mm.ok()) << mm.status();
  EXPECT_THAT(*mm, ElementsAre(FloatNear(1, 1e-6), FloatNear(0, 1e-6)));
  // ArkVale: centre (0.5,0.5), mean deviation 0.5 -> the same cuboid.
  auto ark = DigestPageRows(g, kernels::DigestKind::kArkvaleMean, keys, q, Selection::kShared);
  ASSERT_TRUE(ark.ok());
  EXPECT_THAT(*ark, ElementsAre(FloatNear(1, 1e-6), FloatNear(0, 1e-6)));
  // Centroid: (0.5,0.5).q = 0 and (2,2).q = 0.
  auto cen = DigestPageRows(g, kernels::DigestKind::kCentroid, keys, q, Selection::kShared);
  ASSERT_TRUE(cen.ok());
  EXPECT_THAT(*cen, ElementsAre(FloatNear(0, 1e-6), FloatNear(0, 1e-6)));
}

TEST(TopKTest, TiesGoToTheLowerIndex) {
  const std::vector<float> s = {0.5f, 0.9f, 0.5f, 0.9f};
  EXPECT_THAT(TopK(absl::MakeConstSpan(s), 3), ElementsAre(1u, 3u, 0u));
  EXPECT_THAT(TopK(absl::MakeConstSpan(s), 9), ElementsAre(1u, 3u, 0u, 2u));
}

TEST(EvaluateEstimatorTest, RecallAndMassAtK) {
  PageAttention exact;
  exact.full_pages = 4;
  exact.max_prob = {0.1, 0.4, 0.2, 0.3};
  exact.mass = {0.15, 0.35, 0.2, 0.25};
  const std::vector<float> scores = {0.9f, 0.8f, 0.1f, 0.0f};
  const std::vector<uint32_t> ks = {1, 2, 4};
  auto q = EvaluateEstimator(exact, scores, ks);
  ASSERT_TRUE(q.ok()) << q.status();
  // k=1: estimate {0}, truth {1}; k=2: {0,1} vs {1,3}; k=4: nothing to choose.
  EXPECT_THAT(q->recall, ElementsAre(0.0, 0.5, -1.0));
  EXPECT_THAT(q->mass, ElementsAre(DoubleNear(0.15, 1e-12), DoubleNear(0.5, 1e-12), -1.0));
}

TEST(EvaluateEstimatorTest, RejectsMismatchAndZeroK) {
  PageAttention exact;
  exact.full_pages = 2;
  exact.max_prob = {0.5, 0.5};
  exact.mass = {0.5, 0.5};
  EXPECT_EQ(EvaluateEstimator(exact, std::vector<float>{1}, std::vector<uint32_t>{1})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EvaluateEstimator(exact, std::vector<float>{1, 2}, std::vector<uint32_t>{0})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(CompareNextTokenTest, KlAndArgmax) {
  // p = (1/4, 3/4), q = (1/2, 1/2): KL = 1/4 ln(1/2) + 3/4 ln(3/2).
  auto c = CompareNextToken(std::vector<float>{0, std::log(3.0f)}, std::vector<float>{0, 0});
  ASSERT_TRUE(c.ok());
  EXPECT_NEAR(c->kl, 0.25 * std::log(0.5) + 0.75 * std::log(1.5), 1e-7);
  EXPECT_FALSE(c->same_argmax);  // argmax 1 vs 0 (tie to the lower index)
  auto same = CompareNextToken(std::vector<float>{3, 1, 2}, std::vector<float>{13, 11, 12});
  ASSERT_TRUE(same.ok());
  EXPECT_NEAR(same->kl, 0.0, 1e-12);  // a shift leaves the softmax unchanged
  EXPECT_TRUE(same->same_argmax);
}

TEST(CompareNextTokenTest, RejectsBadLogits) {
  EXPECT_EQ(CompareNextToken(std::vector<float>{1, 2}, std::vector<float>{1}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CompareNextToken(std::vector<float>{}, std::vector<float>{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CompareNextToken(std::vector<float>{1, NAN}, std::vector<float>{1, 2})
                .status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::eval
