#include "worker/model/prompt_buffers.h"

#include <vector>

#include "gtest/gtest.h"

namespace kvtier::model {
namespace {

PromptRows Filled(size_t n, float first) {
  PromptRows v(n);
  for (size_t i = 0; i < n; ++i) v[i] = first + static_cast<float>(i);
  return v;
}

TEST(PromptBufferPoolTest, AReleasedBufferServesTheNextReserve) {
  PromptBufferPool pool(4);
  PromptRows a = Filled(1 << 20, 0);
  const float* memory = a.data();
  pool.Release(a);
  EXPECT_TRUE(a.empty());
  EXPECT_EQ(a.capacity(), 0u);
  EXPECT_EQ(pool.kept(), 1u);
  PromptRows b;
  pool.Reserve(b, 1000);
  EXPECT_EQ(b.data(), memory);
  EXPECT_GE(b.capacity(), size_t{1} << 20);
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(pool.kept(), 0u);
}

TEST(PromptBufferPoolTest, ReserveKeepsTheElementsAndKeepsTheSmallerBuffer) {
  PromptBufferPool pool(4);
  PromptRows big = Filled(4096, 0);
  const float* big_memory = big.data();
  pool.Release(big);
  PromptRows rows = Filled(100, 7);
  rows.shrink_to_fit();
  const float* small_memory = rows.data();
  pool.Reserve(rows, 2000);
  EXPECT_EQ(rows.data(), big_memory);
  EXPECT_EQ(rows, Filled(100, 7));
  // The buffer it replaced is kept for a smaller request.
  ASSERT_EQ(pool.kept(), 1u);
  PromptRows next;
  pool.Reserve(next, 50);
  EXPECT_EQ(next.data(), small_memory);
}

TEST(PromptBufferPoolTest, TheSmallestLargeEnoughBufferIsChosen) {
  PromptBufferPool pool(4);
  std::vector<PromptRows> bufs = {Filled(300, 0), Filled(100, 0), Filled(200, 0)};
  std::vector<const float*> memory;
  for (auto& b : bufs) {
    b.shrink_to_fit();
    memory.push_back(b.data());
    pool.Release(b);
  }
  PromptRows x;
  pool.Reserve(x, 150);
  EXPECT_EQ(x.data(), memory[2]);  // 200, not 300
  PromptRows y;
  pool.Reserve(y, 250);
  EXPECT_EQ(y.data(), memory[0]);
  PromptRows z;
  pool.Reserve(z, 1000);  // none large enough: fresh memory
  EXPECT_GE(z.capacity(), 1000u);
  EXPECT_NE(z.data(), memory[1]);
  EXPECT_EQ(pool.kept(), 1u);
}

TEST(PromptBufferPoolTest, KeepsAtMostItsLimitDroppingTheSmallest) {
  PromptBufferPool pool(2);
  for (size_t n : {300, 100, 200}) {
    PromptRows b = Filled(n, 0);
    b.shrink_to_fit();
    pool.Release(b);
  }
  EXPECT_EQ(pool.kept(), 2u);
  PromptRows x;
  pool.Reserve(x, 100);
  EXPECT_GE(x.capacity(), 200u);  // the 100 was dropped
  PromptBufferPool none(0);
  PromptRows b = Filled(10, 0);
  none.Release(b);
  EXPECT_EQ(none.kept(), 0u);
  EXPECT_EQ(b.capacity(), 0u);
}

}  // namespace
}  // namespace kvtier::model
