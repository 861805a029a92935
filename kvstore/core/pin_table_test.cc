#include "kvstore/core/pin_table.h"

#include <gtest/gtest.h>

namespace kvtier::store {
namespace {

PageKey K(uint64_t n) { return PageKey{.hash = {.hi = 1, .lo = n}, .layer = 2}; }

TEST(PinTableTest, CreateAddReleaseAndExpiry) {
  PinTable pins;
  const uint64_t a = pins.Create(100);
  const uint64_t b = pins.Create(50);
  EXPECT_NE(a, 0u);
  EXPECT_NE(a, b);
  EXPECT_TRUE(pins.AddKey(a, K(1)));
  EXPECT_FALSE(pins.AddKey(a, K(1)));
  EXPECT_TRUE(pins.AddKey(a, K(2)));
  EXPECT_EQ(pins.FirstExpired(49), 0u);
  EXPECT_EQ(pins.FirstExpired(50), b);
  pins.SetExpiry(b, 200);
  EXPECT_EQ(pins.FirstExpired(150), a);
  pins.RemoveKey(a, K(2));
  auto keys = pins.Release(a);
  EXPECT_EQ(keys.size(), 1u);
  EXPECT_TRUE(keys.contains(K(1)));
  EXPECT_FALSE(pins.Contains(a));
  EXPECT_EQ(pins.size(), 1u);
  EXPECT_EQ(pins.FirstExpired(150), 0u);
}

}  // namespace
}  // namespace kvtier::store
