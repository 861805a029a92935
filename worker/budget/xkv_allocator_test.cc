#include "worker/budget/xkv_allocator.h"

#include <algorithm>
#include <functional>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::testing::ElementsAre;

XkvProfile OneSample(std::vector<std::vector<double>> layers) {
  XkvProfile p;
  p.n_layers = static_cast<uint32_t>(layers.size());
  p.samples.push_back(std::move(layers));
  return p;
}

double SumRetention(const XkvAllocator& a, size_t sample,
                    const std::vector<int64_t>& b) {
  double sum = 0;
  for (size_t l = 0; l < b.size(); ++l) {
    sum += a.Retention(sample, static_cast<int32_t>(l), b[l]);
  }
  return sum;
}

// Best sum of retention over every split of `total` (each layer's share in
// [min_each, total]).
double BruteForceBest(const XkvAllocator& a, int64_t total, int64_t min_each) {
  const int32_t n = a.n_layers();
  std::vector<int64_t> b(n, min_each);
  double best = -1;
  std::function<void(int32_t, int64_t)> rec = [&](int32_t l, int64_t left) {
    if (l == n - 1) {
      b[l] = min_each + left;
      best = std::max(best, SumRetention(a, 0, b));
      return;
    }
    for (int64_t x = 0; x <= left; ++x) {
      b[l] = min_each + x;
      rec(l + 1, left - x);
    }
  };
  rec(0, total - int64_t{n} * min_each);
  return best;
}

XkvProfile HandMade() {
  return OneSample({{5, 3, 1}, {4, 4, 0.5, 0.5}, {9, 0.5, 0.5}});
}

TEST(XkvAllocatorTest, HandMadeProfileKnownOptimum) {
  auto xkv = XkvAllocator::Create(HandMade());
  ASSERT_TRUE(xkv.ok()) << xkv.status();
  // Gains: L0 {5,3,1}/9, L1 {4,4,.5,.5}/9, L2 {9,.5,.5}/10. The best 4 units
  // are .9 (L2), 5/9 (L0), 4/9 and 4/9 (L1).
  auto a = xkv->Allocate({.n_layers = 3, .n_kv_heads = 2, .total = 4});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->budgets, ElementsAre(1, 2, 1));
  EXPECT_NEAR(SumRetention(*xkv, 0, a->budgets), 5.0 / 9 + 8.0 / 9 + 0.9,
              1e-12);
  EXPECT_EQ(xkv->name(), "xkv");
}

TEST(XkvAllocatorTest, MatchesBruteForceAndTotalIsExact) {
  auto xkv = XkvAllocator::Create(HandMade());
  ASSERT_TRUE(xkv.ok());
  for (int64_t total = 1; total <= 14; ++total) {
    auto a = xkv->Allocate({.n_layers = 3, .n_kv_heads = 1, .total = total});
    ASSERT_TRUE(a.ok());
    EXPECT_EQ(a->Total(), total);
    EXPECT_NEAR(SumRetention(*xkv, 0, a->budgets),
                BruteForceBest(*xkv, total, 0), 1e-12)
        << "total " << total;
  }
}

TEST(XkvAllocatorTest, RandomConcaveProfilesMatchBruteForce) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<double> value(0.0, 10.0);
  std::uniform_int_distribution<int> length(1, 5);
  for (int trial = 0; trial < 40; ++trial) {
    std::vector<std::vector<double>> layers(3 + trial % 2);
    for (auto& inc : layers) {
      inc.resize(length(rng));
      for (double& v : inc) v = value(rng);
      std::sort(inc.rbegin(), inc.rend());
      inc[0] += 0.1;  // never all zero
    }
    const int64_t min_each = trial % 3 == 0 ? 1 : 0;
    auto xkv =
        XkvAllocator::Create(OneSample(layers), {.min_per_layer = min_each});
    ASSERT_TRUE(xkv.ok());
    const int64_t n = static_cast<int64_t>(layers.size());
    for (int64_t total = n * min_each + (min_each == 0); total <= 12; ++total) {
      auto a = xkv->Allocate({.n_layers = static_cast<int32_t>(n),
                              .n_kv_heads = 1,
                              .total = total});
      ASSERT_TRUE(a.ok());
      EXPECT_EQ(a->Total(), total);
      for (int64_t b : a->budgets) EXPECT_GE(b, min_each);
      ASSERT_NEAR(SumRetention(*xkv, 0, a->budgets),
                  BruteForceBest(*xkv, total, min_each), 1e-12)
          << "trial " << trial << " total " << total;
    }
  }
}

TEST(XkvAllocatorTest, TargetRetentionUsesTheFewestUnits) {
  auto xkv = XkvAllocator::Create(HandMade());
  ASSERT_TRUE(xkv.ok());
  for (double target : {0.3, 0.5, 0.75, 0.9, 0.99, 1.0}) {
    auto a = xkv->AllocateForRetention(target, 1);
    ASSERT_TRUE(a.ok());
    EXPECT_GE(SumRetention(*xkv, 0, a->budgets), 3 * target - 1e-9);
    // No smaller total reaches the target.
    const int64_t used = a->Total();
    if (used > 0) {
      EXPECT_LT(BruteForceBest(*xkv, used - 1, 0), 3 * target - 1e-9)
          << "target " << target;
    }
  }
  // 0.75 * 3 = 2.25: .9 + 5/9 + 4/9 = 1.9, + 4/9 = 2.344 -> 4 units.
  auto a = xkv->AllocateForRetention(0.75, 1);
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->budgets, ElementsAre(1, 2, 1));
  EXPECT_EQ(xkv->AllocateForRetention(1.5, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(xkv->AllocateForRetention(0.0, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(XkvAllocatorTest, PagesGroupTokenIncrements) {
  auto xkv = XkvAllocator::Create(OneSample({{4, 3, 2, 1, 0.5}, {6, 0.1}}),
                                  {.tokens_per_unit = 2});
  ASSERT_TRUE(xkv.ok());
  EXPECT_NEAR(xkv->Retention(0, 0, 1), 7.0 / 10.5, 1e-15);
  EXPECT_NEAR(xkv->Retention(0, 0, 2), 10.0 / 10.5, 1e-15);
  EXPECT_EQ(xkv->Retention(0, 0, 3), 1.0);
  EXPECT_EQ(xkv->Retention(0, 1, 1), 1.0);
  auto a = xkv->Allocate({.n_layers = 2, .n_kv_heads = 1, .total = 2});
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->budgets, ElementsAre(1, 1));
}

TEST(XkvAllocatorTest, SurplusBeyondTheProfileIsSpreadEvenly) {
  auto xkv = XkvAllocator::Create(OneSample({{2, 1}, {3}, {1}}));
  ASSERT_TRUE(xkv.ok());
  auto a = xkv->Allocate({.n_layers = 3, .n_kv_heads = 1, .total = 9});
  ASSERT_TRUE(a.ok());
  // 4 units reach full retention; the other 5 go 2, 2, 1.
  EXPECT_THAT(a->budgets, ElementsAre(4, 3, 2));
}

TEST(XkvAllocatorTest, SamplesAreSolvedSeparatelyAndAveraged) {
  XkvProfile p;
  p.n_layers = 2;
  p.samples = {{{10, 9, 8}, {1}}, {{1}, {10, 9, 8}}};
  auto xkv = XkvAllocator::Create(p);
  ASSERT_TRUE(xkv.ok());
  // Sample 0 alone gives (2, 1) for 3 units; sample 1 gives (1, 2).
  auto a = xkv->Allocate({.n_layers = 2, .n_kv_heads = 1, .total = 3});
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->budgets, ElementsAre(2, 1));  // 1.5/1.5, tie to layer 0
  EXPECT_EQ(a->Total(), 3);
}

TEST(XkvAllocatorTest, RejectsNonConcaveProfilesAndBadRequests) {
  EXPECT_EQ(XkvAllocator::Create(OneSample({{1, 2}})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(XkvAllocator::Create(OneSample({{0, 0}})).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(XkvAllocator::Create(OneSample({{1}}), {.tokens_per_unit = 0})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  auto xkv = XkvAllocator::Create(HandMade(), {.min_per_layer = 2});
  ASSERT_TRUE(xkv.ok());
  EXPECT_EQ(xkv->Allocate({.n_layers = 2, .n_kv_heads = 1, .total = 8})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(xkv->Allocate({.n_layers = 3, .n_kv_heads = 1, .total = 5})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
