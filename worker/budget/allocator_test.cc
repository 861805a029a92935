#include "worker/budget/allocator.h"

#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::testing::ElementsAre;

TEST(UniformAllocatorTest, PerLayerSplitsEvenlyWithRemainderFirst) {
  UniformAllocator uniform;
  auto a = uniform.Allocate({.n_layers = 4, .n_kv_heads = 2, .total = 10});
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(a->budgets, ElementsAre(3, 3, 2, 2));
  EXPECT_EQ(a->Total(), 10);
  EXPECT_EQ(a->LayerBudget(1), 3);
  EXPECT_EQ(a->HeadBudget(3, 1), 2);
}

TEST(UniformAllocatorTest, PerHeadSplitsOverUnits) {
  UniformAllocator uniform(BudgetGranularity::kPerHead);
  auto a = uniform.Allocate({.n_layers = 2, .n_kv_heads = 3, .total = 20});
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(a->budgets, ElementsAre(4, 4, 3, 3, 3, 3));
  EXPECT_EQ(a->LayerBudget(0), 11);
  EXPECT_EQ(a->HeadBudget(1, 2), 3);
  EXPECT_EQ(a->Total(), 20);
}

TEST(UniformAllocatorTest, RejectsBadRequests) {
  UniformAllocator uniform;
  EXPECT_EQ(uniform.Allocate({.n_layers = 0, .n_kv_heads = 1, .total = 4})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(uniform.Allocate({.n_layers = 2, .n_kv_heads = 1, .total = 0})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      uniform
          .Allocate({.n_layers = 2, .n_kv_heads = 1, .total = 4, .context = -1})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(uniform
                .Allocate({.n_layers = kMaxBudgetLayers + 1,
                           .n_kv_heads = 1,
                           .total = 1 << 20})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(uniform
                .Allocate({.n_layers = 2,
                           .n_kv_heads = 1,
                           .total = 4,
                           .context = kMaxBudgetContext + 1})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      uniform
          .Allocate(
              {.n_layers = 2, .n_kv_heads = 1, .total = kMaxBudgetTotal + 1})
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(RoundLargestRemainderTest, HamiltonTextbookExample) {
  // 47000, 16000, 15800, 12000, 6100, 3100 votes for 10 seats.
  const std::vector<double> ideal = {4.7, 1.6, 1.58, 1.2, 0.61, 0.31};
  auto seats = RoundLargestRemainder(ideal, 10, 0);
  ASSERT_TRUE(seats.ok());
  EXPECT_THAT(*seats, ElementsAre(5, 2, 1, 1, 1, 0));
}

TEST(RoundLargestRemainderTest, MinimumAndMaximumHold) {
  auto a = RoundLargestRemainder(std::vector<double>{0.1, 0.2, 9.7}, 10, 1);
  ASSERT_TRUE(a.ok());
  EXPECT_THAT(*a, ElementsAre(1, 1, 8));
  auto b = RoundLargestRemainder(std::vector<double>{0.0, 0.0, 12.0}, 12, 0, 5);
  ASSERT_TRUE(b.ok());
  EXPECT_THAT(*b, ElementsAre(4, 3, 5));
  // Ideal shares that sum to less than the total still reach it.
  auto c = RoundLargestRemainder(std::vector<double>{1.5, 0.5}, 6, 0);
  ASSERT_TRUE(c.ok());
  EXPECT_THAT(*c, ElementsAre(4, 2));
}

TEST(RoundLargestRemainderTest, InfeasibleOrBadSharesAreRejected) {
  EXPECT_EQ(
      RoundLargestRemainder(std::vector<double>{1, 1}, 1, 1).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      RoundLargestRemainder(std::vector<double>{1, 1}, 9, 0, 4).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      RoundLargestRemainder(std::vector<double>{-1, 3}, 2, 0).status().code(),
      absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(RoundLargestRemainder({}, 2, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
