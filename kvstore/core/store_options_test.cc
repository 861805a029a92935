#include <gtest/gtest.h>

#include "kvstore/core/store.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

absl::StatusCode Code(const StoreOptions& o) { return o.Validate().code(); }

TEST(StoreOptionsTest, DefaultsAreValid) { EXPECT_TRUE(StoreOptions().Validate().ok()); }

TEST(StoreOptionsTest, EachOptionIsChecked) {
  const auto kBad = absl::StatusCode::kInvalidArgument;
  StoreOptions o;
  o.data_dir = "";
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.ram.capacity_bytes = 0;
  EXPECT_EQ(Code(o), kBad);
  o.ram.capacity_bytes = 4095;  // below one slot
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.disk.capacity_bytes = 0;
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.ram.low_watermark = 0;
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.ram.low_watermark = 0.95;  // above high
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.disk.high_watermark = 1.5;
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.disk.low_watermark = std::nan("");
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.ram.policy = "fifo";
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.disk.policy = "";
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.max_batch_pages = 0;
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.max_lookup_pages = 0;
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.promote_after_reads = 0;
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.max_pin_ttl_ms = 0;
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.max_pins = 0;
  EXPECT_EQ(Code(o), kBad);
  o = StoreOptions();
  o.ram.high_watermark = 1.0;
  o.ram.low_watermark = 1.0;
  o.disk.policy = "s3fifo";
  EXPECT_TRUE(o.Validate().ok());
}

TEST(StoreOptionsTest, OpenRejectsBadOptions) {
  StoreOptions o;
  o.max_batch_pages = 0;
  EXPECT_EQ(Store::Open(o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::store
