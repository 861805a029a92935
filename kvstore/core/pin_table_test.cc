#include "kvstore/core/pin_table.h"

#include <gtest/gtest.h>

namespace kvtier::store {
namespace {

PageKey K(uint64_t n) { return PageKey{.hash = {.hi = 1, .lo = n}, .layer = 2}; }

TEST(PinTableTest, CreateAddReleaseAndExpiry) {
  PinTable pins;
  const uint64_t a = pins.Create(100, /*tenant=*/7);
  const uint64_t b = pins.Create(50, /*tenant=*/7);
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

TEST(PinTableTest, PublicIdsAreRandomAndScopedToTheirTenant) {
  PinTable pins;
  const uint64_t a = pins.Create(100, /*tenant=*/7);
  const uint64_t b = pins.Create(100, /*tenant=*/7);
  const PinId id_a = pins.public_id(a);
  EXPECT_FALSE(id_a.IsZero());
  EXPECT_NE(id_a, pins.public_id(b));
  EXPECT_EQ(pins.Find(7, id_a), a);
  EXPECT_EQ(pins.Find(7, pins.public_id(b)), b);
  // Another tenant's lookup of the same id finds nothing.
  EXPECT_EQ(pins.Find(8, id_a), 0u);
  EXPECT_EQ(pins.Find(0, id_a), 0u);
  EXPECT_EQ(pins.tenant(a), 7u);
  pins.Release(a);
  EXPECT_EQ(pins.Find(7, id_a), 0u);
}

TEST(PinTableTest, RestoreKeepsBothIdsAndNewLocalIdsFollow) {
  PinTable pins;
  const PinId restored{.hi = 5, .lo = 6};
  pins.Restore(40, 100, /*tenant=*/3, restored);
  EXPECT_EQ(pins.Find(3, restored), 40u);
  EXPECT_EQ(pins.Find(4, restored), 0u);
  EXPECT_EQ(pins.expiry_ms(40), 100);
  EXPECT_EQ(pins.Create(100, 3), 41u);
}

TEST(PinIdTest, BytesRoundTripAndValidation) {
  const PinId id{.hi = 0x0102030405060708, .lo = 0x090a0b0c0d0e0f10};
  EXPECT_EQ(id.Bytes(), std::string("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10", 16));
  EXPECT_EQ(*PinId::FromBytes(id.Bytes()), id);
  EXPECT_TRUE(PinId::FromBytesOrEmpty("")->IsZero());
  EXPECT_EQ(PinId::FromBytes("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PinId::FromBytes("short").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PinId::FromBytes(std::string(17, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_NE(PinId::Random(), PinId::Random());
}

}  // namespace
}  // namespace kvtier::store
