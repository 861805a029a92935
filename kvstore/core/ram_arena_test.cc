#include "kvstore/core/ram_arena.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <random>

namespace kvtier::store {
namespace {

constexpr uint64_t kUnit = 4096;

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

TEST(RamArenaTest, SplitsAndMergesBuddies) {
  auto arena = *RamArena::Create(4 * kUnit);
  auto a = arena->Allocate(4096);  // splits 16K -> 8K + 4K + 4K
  auto b = arena->Allocate(3000);
  auto c = arena->Allocate(8192);
  ASSERT_TRUE(a && b && c);
  EXPECT_EQ(a->offset, 0u);
  EXPECT_EQ(b->offset, kUnit);
  EXPECT_EQ(c->offset, 2 * kUnit);
  EXPECT_EQ(c->size_class, 1);
  EXPECT_EQ(arena->used_bytes(), 4 * kUnit);
  EXPECT_FALSE(arena->Allocate(1).has_value());
  EXPECT_FALSE(arena->CanAllocate(1));
  std::memset(arena->Bytes(*a, 4096).data(), 0xab, 4096);
  arena->Free(*a);
  EXPECT_FALSE(arena->CanAllocate(8192));  // a's buddy b is in use
  arena->Free(*b);
  EXPECT_EQ(arena->used_bytes(), 2 * kUnit);
  // a and b merged: an 8 KiB page fits where two 4 KiB pages were.
  auto d = arena->Allocate(8192);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->offset, 0u);
  arena->Free(*c);
  arena->Free(*d);
  EXPECT_EQ(arena->used_bytes(), 0u);
  auto whole = arena->Allocate(4 * kUnit);
  ASSERT_TRUE(whole);
  EXPECT_EQ(whole->offset, 0u);
}

TEST(RamArenaTest, UnevenCapacityNeverMergesPastTheEnd) {
  auto arena = *RamArena::Create(3 * kUnit);  // blocks 8K @0 and 4K @8K
  EXPECT_FALSE(arena->CanAllocate(4 * kUnit));
  auto big = arena->Allocate(8192);
  auto small = arena->Allocate(4096);
  ASSERT_TRUE(big && small);
  EXPECT_EQ(big->offset, 0u);
  EXPECT_EQ(small->offset, 2 * kUnit);
  arena->Free(*small);
  arena->Free(*big);
  EXPECT_FALSE(arena->CanAllocate(4 * kUnit));
  EXPECT_TRUE(arena->Allocate(8192).has_value());
  EXPECT_TRUE(arena->Allocate(4096).has_value());
  EXPECT_FALSE(arena->Allocate(4096).has_value());
}

// Random allocations and frees of mixed sizes: slots never overlap, stay in
// the region, and everything merges back once all is freed. With `scribble`
// every byte of the region, free slots included, is overwritten now and
// then, as a data-plane client still writing a slot it lost may do: the
// allocator keeps nothing there, so nothing changes.
void RandomMixedSizesNeverOverlapAndFullyMerge(bool scribble) {
  constexpr uint64_t kCapacity = 1000 * kUnit;  // not a power of two
  auto arena = *RamArena::Create(kCapacity);
  std::mt19937_64 rng(7);
  std::map<uint64_t, RamArena::Slot> live;  // offset -> slot
  uint64_t used = 0;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const uint64_t bytes = 1 + rng() % (64 * kUnit);
      auto slot = arena->Allocate(bytes);
      if (!slot) continue;
      const uint64_t size = RamArena::ClassBytes(slot->size_class);
      ASSERT_GE(size, bytes);
      ASSERT_LE(slot->offset + size, kCapacity);
      auto next = live.lower_bound(slot->offset);
      if (next != live.end()) {
        ASSERT_LE(slot->offset + size, next->first);
      }
      if (next != live.begin()) {
        auto prev = std::prev(next);
        ASSERT_LE(prev->first + RamArena::ClassBytes(prev->second.size_class), slot->offset);
      }
      live[slot->offset] = *slot;
      used += size;
    } else {
      auto it = live.begin();
      std::advance(it, rng() % live.size());
      used -= RamArena::ClassBytes(it->second.size_class);
      arena->Free(it->second);
      live.erase(it);
    }
    ASSERT_EQ(arena->used_bytes(), used);
    if (scribble && step % 1000 == 0) {
      std::memset(arena->base(), static_cast<int>(rng()), kCapacity);
    }
  }
  for (auto& [offset, slot] : live) arena->Free(slot);
  EXPECT_EQ(arena->used_bytes(), 0u);
  // 1000 units = 512 + 256 + 128 + 64 + 32 + 8: all six blocks are back.
  for (uint64_t units : {512, 256, 128, 64, 32, 8}) {
    EXPECT_TRUE(arena->Allocate(units * kUnit).has_value()) << units;
  }
  EXPECT_FALSE(arena->CanAllocate(1));
}

TEST(RamArenaTest, RandomMixedSizesNeverOverlapAndFullyMerge) {
  RandomMixedSizesNeverOverlapAndFullyMerge(/*scribble=*/false);
}

TEST(RamArenaTest, WritesIntoFreeSlotsCannotCorruptTheAllocator) {
  RandomMixedSizesNeverOverlapAndFullyMerge(/*scribble=*/true);
}

TEST(RamArenaTest, CapacityAboveTheUnitIndexIsRefused) {
  EXPECT_EQ(RamArena::Create(RamArena::kMaxCapacityBytes + kUnit).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Memory from a provider, with a flag set when the arena releases it.
class TestMemory final : public ArenaMemory {
 public:
  TestMemory(uint64_t bytes, bool* released)
      : bytes_(bytes), base_(static_cast<uint8_t*>(std::aligned_alloc(kUnit, bytes))),
        released_(released) {}
  ~TestMemory() override {
    std::free(base_);
    *released_ = true;
  }
  uint8_t* base() const override { return base_; }
  uint64_t bytes() const override { return bytes_; }

 private:
  const uint64_t bytes_;
  uint8_t* const base_;
  bool* const released_;
};

TEST(RamArenaTest, LivesInProvidedMemoryUntilDestroyed) {
  bool released = false;
  uint64_t asked = 0;
  uint8_t* base = nullptr;
  {
    auto arena = RamArena::Create(
        4 * kUnit,
        [&](uint64_t bytes) -> absl::StatusOr<std::unique_ptr<ArenaMemory>> {
          asked = bytes;
          auto memory = std::make_unique<TestMemory>(bytes, &released);
          base = memory->base();
          std::memset(base, 0x5a, bytes);
          return memory;
        },
        /*prefault=*/true);
    ASSERT_TRUE(arena.ok()) << arena.status();
    EXPECT_EQ(asked, 4 * kUnit);
    EXPECT_EQ((*arena)->base(), base);
    // Prefaulting keeps the contents; only the free block's links (its
    // first 16 bytes) were written.
    EXPECT_EQ(base[kUnit + 100], 0x5a);
    auto slot = (*arena)->Allocate(kUnit);
    ASSERT_TRUE(slot);
    EXPECT_EQ((*arena)->Bytes(*slot, kUnit).data(), base + slot->offset);
    EXPECT_FALSE(released);
  }
  EXPECT_TRUE(released);
}

TEST(RamArenaTest, RejectsSmallMisalignedOrFailedMemory) {
  bool released = false;
  EXPECT_EQ(RamArena::Create(4 * kUnit,
                             [&](uint64_t bytes) -> absl::StatusOr<std::unique_ptr<ArenaMemory>> {
                               return std::make_unique<TestMemory>(bytes - kUnit, &released);
                             })
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(released);  // the rejected memory is given back
  EXPECT_EQ(RamArena::Create(4 * kUnit,
                             [](uint64_t) -> absl::StatusOr<std::unique_ptr<ArenaMemory>> {
                               return absl::UnavailableError("no memory today");
                             })
                .status()
                .code(),
            absl::StatusCode::kUnavailable);
}

TEST(RamArenaTest, PrefaultedAnonymousArenaStartsUsable) {
  auto arena = RamArena::Create(1 << 20, nullptr, /*prefault=*/true);
  ASSERT_TRUE(arena.ok()) << arena.status();
  auto slot = (*arena)->Allocate(1 << 20);
  ASSERT_TRUE(slot);
  EXPECT_EQ((*arena)->Bytes(*slot, 1 << 20)[12345], 0);  // anonymous memory starts zeroed
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
