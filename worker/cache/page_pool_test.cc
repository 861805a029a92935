#include "worker/cache/page_pool.h"

#include <set>

#include "gtest/gtest.h"

namespace kvtier::worker {
namespace {

PageLayout Layout() {
  return PageLayout{.page_size = 4, .n_kv_heads = 2, .head_dim = 8, .dtype = DType::kF32};
}

TEST(PagePoolTest, AllocatesEveryDistinctSlotThenRefuses) {
  CpuDevice device;
  auto pool = PagePool::Create(&device, Layout(), 3);
  ASSERT_TRUE(pool.ok()) << pool.status();
  std::set<int32_t> slots;
  for (int i = 0; i < 3; ++i) {
    auto slot = (*pool)->Allocate();
    ASSERT_TRUE(slot.ok());
    slots.insert(*slot);
  }
  EXPECT_EQ(slots, (std::set<int32_t>{0, 1, 2}));
  EXPECT_EQ((*pool)->Allocate().status().code(), absl::StatusCode::kResourceExhausted);
  (*pool)->Free(1);
  auto again = (*pool)->Allocate();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 1);
  EXPECT_EQ((*pool)->in_use(), 3u);
  EXPECT_EQ((*pool)->high_water(), 3u);
}

TEST(PagePoolTest, SlotsAreDisjointPageSizedRegions) {
  CpuDevice device;
  auto pool = PagePool::Create(&device, Layout(), 2);
  ASSERT_TRUE(pool.ok());
  EXPECT_EQ((*pool)->page_bytes(), 4u * 2 * 8 * 4 * 2);
  EXPECT_EQ((*pool)->SlotData(1) - (*pool)->SlotData(0),
            static_cast<ptrdiff_t>((*pool)->page_bytes()));
}

TEST(PagePoolTest, ReservationsNeverExceedCapacity) {
  CpuDevice device;
  auto pool = PagePool::Create(&device, Layout(), 10);
  ASSERT_TRUE(pool.ok());
  EXPECT_TRUE((*pool)->Reserve(6).ok());
  EXPECT_EQ((*pool)->Reserve(5).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ((*pool)->reserved(), 6u);
  EXPECT_TRUE((*pool)->Reserve(4).ok());
  (*pool)->Unreserve(6);
  EXPECT_EQ((*pool)->reserved(), 4u);
}

TEST(PagePoolTest, RejectsBadArguments) {
  CpuDevice device;
  EXPECT_EQ(PagePool::Create(&device, Layout(), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  PageLayout bad = Layout();
  bad.head_dim = 0;
  EXPECT_EQ(PagePool::Create(&device, bad, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PagePool::Create(nullptr, Layout(), 4).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::worker
