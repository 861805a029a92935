#include "common/random_id.h"

#include <string>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

struct TestIdTag {
  static constexpr absl::string_view kField = "test_id";
};
using TestId = RandomId<TestIdTag>;

TEST(RandomIdTest, BytesAreBigEndianHiThenLo) {
  const TestId id{.hi = 0x0102030405060708, .lo = 0x090a0b0c0d0e0f10};
  EXPECT_EQ(id.Bytes(), std::string("\x01\x02\x03\x04\x05\x06\x07\x08"
                                    "\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10",
                                    16));
  EXPECT_EQ(*TestId::FromBytes(id.Bytes()), id);
  EXPECT_EQ(*TestId::FromBytesOrEmpty(id.Bytes()), id);
}

TEST(RandomIdTest, WrongLengthsAreRefusedNamingTheField) {
  for (size_t n : {0, 1, 8, 15, 17, 32}) {
    const absl::StatusOr<TestId> id = TestId::FromBytes(std::string(n, 'x'));
    ASSERT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << n;
    EXPECT_EQ(id.status().message(), "test_id must be 16 bytes, got " + std::to_string(n));
  }
  EXPECT_TRUE(TestId::FromBytesOrEmpty("")->IsZero());
  EXPECT_EQ(TestId::FromBytesOrEmpty("short").status().message(),
            "test_id must be empty or 16 bytes, got 5");
}

TEST(RandomIdTest, FreshIdsDifferInBothHalves) {
  absl::flat_hash_set<uint64_t> his;
  absl::flat_hash_set<uint64_t> los;
  for (int i = 0; i < 1000; ++i) {
    const TestId id = TestId::Random();
    EXPECT_FALSE(id.IsZero());
    his.insert(id.hi);
    los.insert(id.lo);
  }
  EXPECT_EQ(his.size(), 1000u);
  EXPECT_EQ(los.size(), 1000u);
}

TEST(RandomIdTest, DebugStringShowsOnlyTheFirst32Bits) {
  const TestId id{.hi = 0xdeadbeef01234567, .lo = 0x89abcdef89abcdef};
  EXPECT_EQ(id.DebugString(), "deadbeef");
}

}  // namespace
}  // namespace kvtier
