#include "worker/budget/lukv_allocator.h"

#include <algorithm>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::Pointwise;

LukvCurve Curve(std::vector<double> loss, uint32_t protected_tokens = 0) {
  LukvCurve c;
  c.protected_tokens = protected_tokens;
  c.length = static_cast<uint32_t>(loss.size() - 1 + protected_tokens);
  c.loss = std::move(loss);
  return c;
}

// Straight line of `length` tokens with marginal cost `slope`.
LukvCurve Line(uint32_t length, double slope) {
  std::vector<double> loss(length + 1);
  for (uint32_t i = 0; i <= length; ++i) loss[i] = slope * i;
  return Curve(std::move(loss));
}

TEST(ConvexHullTest, EnvelopeOfKnownNonConvexCurve) {
  const std::vector<double> c = {0, 1, 5, 6, 7, 20};
  EXPECT_THAT(LowerConvexHullVertices(c), ElementsAre(0, 1, 4, 5));
  EXPECT_THAT(LowerConvexEnvelope(c), ElementsAre(0, 1, 3, 5, 7, 20));
}

TEST(ConvexHullTest, ConvexCurveIsItsOwnEnvelope) {
  const std::vector<double> c = {0, 1, 3, 6, 10};
  EXPECT_THAT(LowerConvexHullVertices(c), ElementsAre(0, 1, 2, 3, 4));
  EXPECT_THAT(LowerConvexEnvelope(c), ElementsAreArray(c));
}

TEST(ConvexHullTest, CollinearAndConcaveCurvesCollapseToTheChord) {
  EXPECT_THAT(LowerConvexHullVertices(std::vector<double>{0, 1, 2, 3}),
              ElementsAre(0, 3));
  EXPECT_THAT(LowerConvexEnvelope(std::vector<double>{0, 6, 8, 9}),
              ElementsAre(0, 3, 6, 9));
  EXPECT_THAT(LowerConvexHullVertices(std::vector<double>{5}), ElementsAre(0));
}

double Cost(const std::vector<LukvCurve>& curves, const std::vector<int64_t>& m,
            bool envelope) {
  double sum = 0;
  for (size_t u = 0; u < curves.size(); ++u) {
    const std::vector<double> c =
        envelope ? LowerConvexEnvelope(curves[u].loss) : curves[u].loss;
    sum += c[m[u]];
  }
  return sum;
}

// Cheapest way to evict exactly k tokens with m_u <= cap_u.
double BruteForce(const std::vector<LukvCurve>& curves,
                  const std::vector<int64_t>& cap, int64_t k, bool envelope) {
  std::vector<int64_t> m(curves.size(), 0);
  double best = std::numeric_limits<double>::infinity();
  std::function<void(size_t, int64_t)> rec = [&](size_t u, int64_t left) {
    if (u == curves.size()) {
      if (left == 0) best = std::min(best, Cost(curves, m, envelope));
      return;
    }
    for (int64_t x = 0; x <= std::min(left, cap[u]); ++x) {
      m[u] = x;
      rec(u + 1, left - x);
    }
  };
  rec(0, k);
  return best;
}

std::vector<LukvCurve> RandomCurves(std::mt19937& rng, bool convex) {
  std::uniform_real_distribution<double> step(0.0, 5.0);
  std::uniform_int_distribution<int> length(2, 6);
  std::vector<LukvCurve> curves(3);
  for (LukvCurve& c : curves) {
    std::vector<double> inc(length(rng));
    for (double& v : inc) v = step(rng);
    if (convex) std::sort(inc.begin(), inc.end());
    std::vector<double> loss = {0};
    for (double v : inc) loss.push_back(loss.back() + v);
    c = Curve(std::move(loss));
  }
  return curves;
}

TEST(LukvGreedyTest, ExactOptimumOnConvexCurves) {
  std::mt19937 rng(11);
  const LukvSolverOptions no_floor{.floor_fraction = 0};
  for (int trial = 0; trial < 40; ++trial) {
    const std::vector<LukvCurve> curves = RandomCurves(rng, true);
    std::vector<int64_t> cap;
    int64_t capacity = 0;
    for (const LukvCurve& c : curves) {
      cap.push_back(c.length - 1);  // the floor of one token
      capacity += cap.back();
    }
    for (int64_t k = 0; k <= capacity; ++k) {
      auto m = LukvGreedyEvictions(curves, k, no_floor);
      ASSERT_TRUE(m.ok()) << m.status();
      int64_t total = 0;
      for (size_t u = 0; u < m->size(); ++u) {
        EXPECT_LE((*m)[u], cap[u]);
        total += (*m)[u];
      }
      EXPECT_EQ(total, k);
      ASSERT_NEAR(Cost(curves, *m, false), BruteForce(curves, cap, k, false),
                  1e-9)
          << "trial " << trial << " k " << k;
    }
  }
}

TEST(LukvGreedyTest, OptimumOfTheRelaxationOnNonConvexCurves) {
  std::mt19937 rng(12);
  const LukvSolverOptions no_floor{.floor_fraction = 0};
  for (int trial = 0; trial < 40; ++trial) {
    const std::vector<LukvCurve> curves = RandomCurves(rng, false);
    // The floor of one token caps each curve one point short of its end; the
    // greedy is exact for the envelope of the capped curve.
    std::vector<LukvCurve> capped = curves;
    std::vector<int64_t> cap;
    int64_t capacity = 0;
    for (LukvCurve& c : capped) {
      c.loss.pop_back();
      cap.push_back(static_cast<int64_t>(c.loss.size()) - 1);
      capacity += cap.back();
    }
    for (int64_t k = 0; k <= capacity; ++k) {
      auto m = LukvGreedyEvictions(curves, k, no_floor);
      ASSERT_TRUE(m.ok());
      ASSERT_NEAR(Cost(capped, *m, true), BruteForce(capped, cap, k, true),
                  1e-9)
          << "trial " << trial << " k " << k;
    }
  }
}

TEST(LukvGreedyTest, FloorsBoundEvictions) {
  // 200 tokens, no protection: floor ceil(2.0) = 2. 100 tokens with 10
  // protected: floor 10.
  std::vector<LukvCurve> curves = {Line(200, 1.0), Line(90, 1.0)};
  curves[1].length = 100;
  curves[1].protected_tokens = 10;
  auto m = LukvGreedyEvictions(curves, 198 + 90);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_THAT(*m, ElementsAre(198, 90));
  EXPECT_EQ(LukvGreedyEvictions(curves, 198 + 91).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A 50% floor.
  auto half = LukvGreedyEvictions(curves, 100 + 50, {.floor_fraction = 0.5});
  ASSERT_TRUE(half.ok());
  EXPECT_THAT(*half, ElementsAre(100, 50));
  EXPECT_EQ(
      LukvGreedyEvictions(curves, 1, {.floor_fraction = 1.0}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

LukvProfile TwoLines() {
  LukvProfile p;
  p.n_layers = 1;
  p.n_kv_heads = 2;
  p.samples = {{Line(100, 1.0), Line(100, 10.0)}};
  return p;
}

TEST(LukvTableTest, LevelsFollowTheCheapestUnitFirst) {
  auto table = BuildLukvTable(TwoLines());
  ASSERT_TRUE(table.ok()) << table.status();
  // 200 tokens; level p evicts 2p of them, the cheap head first, up to its
  // floor of 1 token (99 evictions).
  EXPECT_THAT(table->prune[9], ElementsAre(0.2, 0.0));     // level 10
  EXPECT_THAT(table->prune[59], ElementsAre(0.99, 0.21));  // level 60
  EXPECT_THAT(table->prune[98], ElementsAre(0.99, 0.99));  // level 99
  for (int p = 1; p < kLukvLevels; ++p) {
    for (size_t u = 0; u < 2; ++u) {
      EXPECT_GE(table->prune[p][u], table->prune[p - 1][u]);
    }
  }
}

TEST(LukvTableTest, SamplesAreAveraged) {
  LukvProfile p = TwoLines();
  p.samples.push_back({Line(100, 10.0), Line(100, 1.0)});
  auto table = BuildLukvTable(p);
  ASSERT_TRUE(table.ok());
  EXPECT_THAT(table->prune[9], Pointwise(DoubleNear(1e-12), {0.1, 0.1}));
  EXPECT_THAT(table->prune[59], Pointwise(DoubleNear(1e-12), {0.6, 0.6}));
}

TEST(LukvAllocatorTest, RatioLookupAndLargestRemainder) {
  auto table = BuildLukvTable(TwoLines());
  ASSERT_TRUE(table.ok());
  auto lukv = LukvAllocator::Create(*table);
  ASSERT_TRUE(lukv.ok());
  EXPECT_EQ(LukvAllocator::RowForRatio(0.0), -1);
  EXPECT_EQ(LukvAllocator::RowForRatio(0.01), 0);
  EXPECT_EQ(LukvAllocator::RowForRatio(0.6), 59);
  EXPECT_EQ(LukvAllocator::RowForRatio(0.999), 98);

  auto by_ratio = lukv->AllocateForRatio(0.6, 100);
  ASSERT_TRUE(by_ratio.ok());
  EXPECT_THAT(by_ratio->budgets, ElementsAre(1, 79));
  auto none = lukv->AllocateForRatio(0.0, 100);
  ASSERT_TRUE(none.ok());
  EXPECT_THAT(none->budgets, ElementsAre(100, 100));

  // total 80 of 200: r = 0.6, same row, exact total.
  auto a = lukv->Allocate(
      {.n_layers = 1, .n_kv_heads = 2, .total = 80, .context = 100});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->budgets, ElementsAre(1, 79));
  // total 81: row 59 scaled by 81/80 -> 1.0125, 79.9875 -> 1, 80.
  auto b = lukv->Allocate(
      {.n_layers = 1, .n_kv_heads = 2, .total = 81, .context = 100});
  ASSERT_TRUE(b.ok());
  EXPECT_THAT(b->budgets, ElementsAre(1, 80));
  EXPECT_EQ(b->granularity, BudgetGranularity::kPerHead);
  EXPECT_EQ(b->HeadBudget(0, 1), 80);
  // More than the context: everyone full, surplus spread.
  auto c = lukv->Allocate(
      {.n_layers = 1, .n_kv_heads = 2, .total = 203, .context = 100});
  ASSERT_TRUE(c.ok());
  EXPECT_THAT(c->budgets, ElementsAre(102, 101));
}

TEST(LukvAllocatorTest, EveryTotalIsExactAndAtLeastOnePerHead) {
  LukvProfile p;
  p.n_layers = 2;
  p.n_kv_heads = 2;
  p.samples = {{Line(64, 0.5), Line(64, 3.0), Line(64, 1.0), Line(64, 0.1)}};
  auto table = BuildLukvTable(p);
  ASSERT_TRUE(table.ok());
  auto lukv = LukvAllocator::Create(*table);
  ASSERT_TRUE(lukv.ok());
  for (int64_t total = 4; total <= 300; ++total) {
    auto a = lukv->Allocate(
        {.n_layers = 2, .n_kv_heads = 2, .total = total, .context = 64});
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->Total(), total);
    for (int64_t b : a->budgets) EXPECT_GE(b, 1);
  }
}

TEST(LukvAllocatorTest, RejectsBadInputs) {
  auto table = BuildLukvTable(TwoLines());
  ASSERT_TRUE(table.ok());
  auto lukv = LukvAllocator::Create(*table);
  ASSERT_TRUE(lukv.ok());
  EXPECT_EQ(lukv->Allocate({.n_layers = 1, .n_kv_heads = 2, .total = 80})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);  // no context
  EXPECT_EQ(
      lukv->Allocate(
              {.n_layers = 2, .n_kv_heads = 2, .total = 80, .context = 100})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      lukv->Allocate(
              {.n_layers = 1, .n_kv_heads = 2, .total = 1, .context = 100})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(lukv->AllocateForRatio(1.0, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  LukvTable bad = *table;
  bad.prune[3][0] = 1.0;
  EXPECT_EQ(LukvAllocator::Create(bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  LukvProfile decreasing = TwoLines();
  decreasing.samples[0][0].loss[5] = -1;
  EXPECT_EQ(BuildLukvTable(decreasing).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
