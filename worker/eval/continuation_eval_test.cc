#include "worker/eval/continuation_eval.h"

#include <vector>

#include "gtest/gtest.h"

namespace kvtier::eval {
namespace {

TEST(RepeatedFourGramsTest, CountsFourGramsSeenBefore) {
  EXPECT_EQ(RepeatedFourGrams({}), 0.0);
  EXPECT_EQ(RepeatedFourGrams({1, 2, 3, 4}), 0.0);
  // Five distinct tokens: two 4-grams, none repeated.
  EXPECT_EQ(RepeatedFourGrams({1, 2, 3, 4, 5}), 0.0);
  // A loop of period 2: 1 2 1 2 1 2 1 2 has five 4-grams, two distinct.
  EXPECT_DOUBLE_EQ(RepeatedFourGrams({1, 2, 1, 2, 1, 2, 1, 2}), 3.0 / 5.0);
  // One token repeated: every 4-gram after the first repeats.
  EXPECT_DOUBLE_EQ(RepeatedFourGrams(std::vector<int>(10, 7)), 6.0 / 7.0);
  // A repeat of a phrase far apart counts once per repeated 4-gram.
  EXPECT_DOUBLE_EQ(RepeatedFourGrams({1, 2, 3, 4, 9, 1, 2, 3, 4}), 1.0 / 6.0);
}

}  // namespace
}  // namespace kvtier::eval
