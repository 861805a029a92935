#include "kvstore/ram_arena.h"

#include <gtest/gtest.h>

#include <cstring>

namespace kvtier::store {
namespace {

TEST(RamArenaTest, ClassOf) {
  EXPECT_EQ(RamArena::ClassOf(0), -1);
  EXPECT_EQ(RamArena::ClassOf(1), 0);
  EXPECT_EQ(RamArena::ClassOf(4096), 0);
  EXPECT_EQ(RamArena::ClassOf(4097), 1);
  EXPECT_EQ(RamArena::ClassOf(8192), 1);
  EXPECT_EQ(RamArena::ClassOf(64 << 20), RamArena::kNumClasses - 1);
  EXPECT_EQ(RamArena::ClassOf((64 << 20) + 1), -1);
  EXPECT_EQ(RamArena::ClassBytes(2), 16384u);
}

TEST(RamArenaTest, CreateRejectsZeroAndRoundsUp) {
  EXPECT_EQ(RamArena::Create(0).status().code(), absl::StatusCode::kInvalidArgument);
  auto arena = RamArena::Create(5000);
  ASSERT_TRUE(arena.ok());
  EXPECT_EQ((*arena)->capacity_bytes(), 8192u);
}

TEST(RamArenaTest, CarvesThenReusesFreedSlots) {
  auto arena = *RamArena::Create(4 * 4096);
  auto a = arena->Allocate(4096);
  auto b = arena->Allocate(3000);
  auto c = arena->Allocate(8192);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->offset, 0u);
  EXPECT_EQ(b->offset, 4096u);
  EXPECT_EQ(c->offset, 8192u);
  EXPECT_EQ(arena->used_bytes(), 4u * 4096);
  EXPECT_FALSE(arena->Allocate(1).has_value());
  EXPECT_FALSE(arena->CanAllocate(1));
  std::memset(arena->Bytes(*a, 4096).data(), 0xab, 4096);
  arena->Free(*b);
  arena->Free(*a);
  EXPECT_EQ(arena->used_bytes(), 2u * 4096);
  // LIFO free list: the last freed slot comes back first.
  auto d = arena->Allocate(100);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->offset, 0u);
  auto e = arena->Allocate(100);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->offset, 4096u);
  // An 8 KiB slot is not split into 4 KiB ones.
  EXPECT_FALSE(arena->Allocate(4096).has_value());
  arena->Free(*c);
  EXPECT_FALSE(arena->CanAllocate(4096));
  EXPECT_TRUE(arena->CanAllocate(8000));
  EXPECT_EQ(arena->carved_bytes(), 4u * 4096);
}

TEST(RamArenaTest, RegionIsOneStableRange) {
  auto arena = *RamArena::Create(1 << 20);
  uint8_t* base = arena->base();
  auto slot = arena->Allocate(65536);
  ASSERT_TRUE(slot);
  absl::Span<uint8_t> bytes = arena->Bytes(*slot, 65536);
  EXPECT_GE(bytes.data(), base);
  EXPECT_LE(bytes.data() + bytes.size(), base + arena->capacity_bytes());
  EXPECT_EQ(arena->base(), base);
}

}  // namespace
}  // namespace kvtier::store
