#include "worker/model/sampler.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier::model {
namespace {

TEST(SamplerTest, GreedyTakesFirstMaximum) {
  absl::StatusOr<Sampler> s = Sampler::Create(0.0f, 1);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->Sample({0.5f, 2.0f, -1.0f, 2.0f}), 1);
  EXPECT_EQ(s->Sample({-3.0f}), 0);
}

TEST(SamplerTest, SameSeedSameDraws) {
  std::vector<float> logits = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  absl::StatusOr<Sampler> a = Sampler::Create(1.0f, 1234);
  absl::StatusOr<Sampler> b = Sampler::Create(1.0f, 1234);
  ASSERT_TRUE(a.ok() && b.ok());
  std::vector<int> da, db;
  for (int i = 0; i < 100; ++i) {
    da.push_back(a->Sample(logits));
    db.push_back(b->Sample(logits));
  }
  EXPECT_EQ(da, db);
  // 100 draws over 5 near-uniform choices hit more than one of them.
  EXPECT_NE(std::count(da.begin(), da.end(), da[0]), 100);
}

TEST(SamplerTest, NegligibleProbabilitiesAreNeverDrawn) {
  absl::StatusOr<Sampler> s = Sampler::Create(0.5f, 7);
  ASSERT_TRUE(s.ok());
  // exp(-100 / 0.5) underflows to 0: only index 2 can be drawn.
  for (int i = 0; i < 50; ++i) EXPECT_EQ(s->Sample({-100, -100, 0, -100}), 2);
}

TEST(SamplerTest, RejectsBadTemperature) {
  EXPECT_EQ(Sampler::Create(-0.1f, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sampler::Create(NAN, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Sampler::Create(INFINITY, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::model
