// BatchGetInPlace: RAM pages handed over where they lie in the arena, under
// leases that outlive deletes and evictions until the callback returns.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "common/checksum.h"
#include "kvstore/core/store.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::AsString;
using testing::Key;
using testing::PageBytes;
using testing::PutPages;
using testing::SmallLayout;
using testing::TempDir;

constexpr uint64_t kPage = 4096;

std::string Expected(const PageKey& key) { return AsString(PageBytes(key, SmallLayout())); }

class InPlaceTest : public ::testing::Test {
 protected:
  // 16 pages of RAM, demoting from 8 down to 4.
  void Open(uint32_t promote_after_reads = 2) {
    StoreOptions o;
    o.data_dir = dir_.path();
    o.ram = {.capacity_bytes = 16 * kPage, .high_watermark = 0.5, .low_watermark = 0.25};
    o.disk = {.capacity_bytes = 64 * kPage};
    o.max_batch_pages = 8;
    o.promote_after_reads = promote_after_reads;
    store_.reset();  // its RocksDB lock
    auto store = Store::Open(o);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void SetUp() override { Open(); }

  // Where page `key` lies in the arena (a RAM page).
  uint64_t ArenaOffset(const PageKey& key) {
    uint64_t offset = 0;
    auto got = store_->BatchGetInPlace({key}, [&](auto, auto bytes) {
      offset = bytes[0].data() - store_->RamRegion().data();
      return absl::OkStatus();
    });
    EXPECT_TRUE(got.ok()) << got.status();
    EXPECT_EQ((*got)[0].tier, Tier::kRam);
    return offset;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(InPlaceTest, RamPagesAreHandedOverInTheArena) {
  ASSERT_TRUE(PutPages(*store_, {Key(1), Key(2, 5)}).ok());
  const absl::Span<uint8_t> arena = store_->RamRegion();
  int calls = 0;
  auto got = store_->BatchGetInPlace(
      {Key(2, 5), Key(3), Key(1)},
      [&](absl::Span<const GetResult> results, absl::Span<const absl::Span<const uint8_t>> bytes) {
        ++calls;
        EXPECT_EQ(results.size(), 3u);
        EXPECT_EQ(bytes.size(), 3u);
        EXPECT_TRUE(results[0].status.ok());
        EXPECT_EQ(results[0].tier, Tier::kRam);
        EXPECT_EQ(results[0].layout, SmallLayout());
        EXPECT_EQ(results[0].checksum, testing::Spec(Key(2, 5)).checksum);
        EXPECT_TRUE(results[0].data.empty());
        EXPECT_EQ(AsString(bytes[0]), Expected(Key(2, 5)));
        EXPECT_GE(bytes[0].data(), arena.data());
        EXPECT_LE(bytes[0].data() + bytes[0].size(), arena.data() + arena.size());
        EXPECT_EQ(results[1].status.code(), absl::StatusCode::kNotFound);
        EXPECT_TRUE(bytes[1].empty());
        EXPECT_EQ(AsString(bytes[2]), Expected(Key(1)));
        return absl::OkStatus();
      });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(calls, 1);
  EXPECT_TRUE((*got)[0].status.ok());
  EXPECT_TRUE((*got)[0].data.empty());
  EXPECT_EQ((*got)[1].status.code(), absl::StatusCode::kNotFound);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.ram.hits, 2u);
  EXPECT_EQ(stats.get_misses, 1u);
  EXPECT_EQ(stats.ram.used_bytes, 2 * kPage);
}

TEST_F(InPlaceTest, ForcedDeleteDuringUseKeepsTheSlotUntilItReturns) {
  ASSERT_TRUE(PutPages(*store_, {Key(1), Key(2)}).ok());
  ASSERT_TRUE(store_->Pin(0, {Key(1)}, 1000, PinId{}).ok());
  auto got = store_->BatchGetInPlace({Key(1)}, [&](auto, auto bytes) {
    EXPECT_EQ(store_->Delete({Key(1)}, /*force=*/true).value(), 1u);
    // A freed slot would take the free list's links and then the next put
    // of the same size; neither may touch the leased bytes.
    EXPECT_TRUE(PutPages(*store_, {Key(3), Key(4)}).ok());
    EXPECT_EQ(AsString(bytes[0]), Expected(Key(1)));
    StoreStats stats = store_->Stats();
    EXPECT_EQ(stats.ram.pages, 3u);
    EXPECT_EQ(stats.ram.used_bytes, 4 * kPage);
    return absl::OkStatus();
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE((*got)[0].status.ok());
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.ram.pages, 3u);
  EXPECT_EQ(stats.ram.used_bytes, 3 * kPage);
  EXPECT_EQ(stats.lost_pages, 0u);
  auto after = store_->BatchGet({Key(1), Key(3)});
  ASSERT_TRUE(after.ok());
  EXPECT_EQ((*after)[0].status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*after)[1].data, Expected(Key(3)));
}

TEST_F(InPlaceTest, LeasedPageIsNotEvictedDuringUse) {
  ASSERT_TRUE(PutPages(*store_, {Key(1)}).ok());
  auto got = store_->BatchGetInPlace({Key(1)}, [&](auto, auto bytes) {
    // Past the high watermark (8 pages): every page but the leased one
    // may leave RAM.
    for (uint64_t n = 10; n < 18; ++n) EXPECT_TRUE(PutPages(*store_, {Key(n)}).ok()) << n;
    EXPECT_GT(store_->Stats().demotions, 0u);
    EXPECT_EQ(AsString(bytes[0]), Expected(Key(1)));
    return absl::OkStatus();
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(store_->Lookup(0, {Key(1).hash}, 0, 1)->tiers, std::vector<Tier>{Tier::kRam});
}

TEST_F(InPlaceTest, CorruptRamPageIsDataLossAndDropped) {
  ASSERT_TRUE(PutPages(*store_, {Key(1), Key(2)}).ok());
  const uint64_t offset = ArenaOffset(Key(1));
  store_->RamRegion()[offset + 100] ^= 0x5a;
  auto got = store_->BatchGetInPlace({Key(1), Key(2)}, [&](auto results, auto bytes) {
    EXPECT_EQ(results[0].status.code(), absl::StatusCode::kDataLoss);
    EXPECT_EQ(results[0].tier, Tier::kNone);
    EXPECT_TRUE(bytes[0].empty());
    EXPECT_TRUE(results[1].status.ok());
    EXPECT_EQ(AsString(bytes[1]), Expected(Key(2)));
    return absl::OkStatus();
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].status.code(), absl::StatusCode::kDataLoss);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.lost_pages, 1u);
  EXPECT_EQ(stats.ram.pages, 1u);
  EXPECT_EQ(stats.ram.used_bytes, kPage);
  EXPECT_EQ((*store_->BatchGet({Key(1)}))[0].status.code(), absl::StatusCode::kNotFound);
}

// RamCheck::kCaller hands RAM pages over unhashed: the same spoiled page
// comes back OK with its stored checksum, for the caller to check, and is
// not dropped; a verifying read then drops it.
TEST_F(InPlaceTest, CallerCheckedRamPagesAreNotHashed) {
  ASSERT_TRUE(PutPages(*store_, {Key(1)}).ok());
  store_->RamRegion()[ArenaOffset(Key(1)) + 100] ^= 0x5a;
  auto got = store_->BatchGetInPlace(
      {Key(1)},
      [&](auto results, auto bytes) {
        EXPECT_TRUE(results[0].status.ok());
        EXPECT_EQ(results[0].tier, Tier::kRam);
        EXPECT_EQ(bytes[0].size(), kPage);
        EXPECT_NE(PageChecksum(bytes[0].data(), bytes[0].size()), results[0].checksum);
        return absl::OkStatus();
      },
      {.ram_check = Store::RamCheck::kCaller});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(store_->Stats().lost_pages, 0u);
  EXPECT_EQ((*store_->BatchGet({Key(1)}))[0].status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store_->Stats().lost_pages, 1u);
}

TEST_F(InPlaceTest, DiskPagesComeBackWithTheirDataAndArePromoted) {
  for (uint64_t n = 1; n <= 9; ++n) ASSERT_TRUE(PutPages(*store_, {Key(n)}).ok()) << n;
  ASSERT_EQ(store_->Lookup(0, {Key(1).hash}, 0, 1)->tiers, std::vector<Tier>{Tier::kDisk});
  for (int read = 1; read <= 2; ++read) {
    auto got = store_->BatchGetInPlace({Key(1), Key(9)}, [&](auto results, auto bytes) {
      EXPECT_EQ(results[0].tier, Tier::kDisk);
      EXPECT_EQ(results[0].data, Expected(Key(1)));
      EXPECT_EQ(static_cast<const void*>(bytes[0].data()), results[0].data.data());
      EXPECT_EQ(results[1].tier, Tier::kRam);
      EXPECT_EQ(AsString(bytes[1]), Expected(Key(9)));
      return absl::OkStatus();
    });
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ((*got)[0].data, Expected(Key(1)));
    EXPECT_TRUE((*got)[1].data.empty());
  }
  // The second read promoted the disk page.
  EXPECT_EQ(store_->Stats().promotions, 1u);
  EXPECT_EQ(store_->Stats().disk.hits, 2u);
  EXPECT_EQ(store_->Lookup(0, {Key(1).hash}, 0, 1)->tiers, std::vector<Tier>{Tier::kRam});
}

// skip_disk: a disk page comes back OK with its metadata and no bytes, and
// such reads neither count as hits nor toward promotion.
TEST_F(InPlaceTest, SkippedDiskPagesAreNotReadCountedOrPromoted) {
  for (uint64_t n = 1; n <= 9; ++n) ASSERT_TRUE(PutPages(*store_, {Key(n)}).ok()) << n;
  ASSERT_EQ(store_->Lookup(0, {Key(1).hash}, 0, 1)->tiers, std::vector<Tier>{Tier::kDisk});
  const uint64_t checksum = PageChecksum(Expected(Key(1)).data(), kPage);
  for (int read = 1; read <= 3; ++read) {
    auto got = store_->BatchGetInPlace(
        {Key(1), Key(9)},
        [&](auto results, auto bytes) {
          EXPECT_TRUE(results[0].status.ok());
          EXPECT_EQ(results[0].tier, Tier::kDisk);
          EXPECT_EQ(results[0].checksum, checksum);
          EXPECT_TRUE(bytes[0].empty());
          EXPECT_TRUE(results[0].data.empty());
          EXPECT_EQ(AsString(bytes[1]), Expected(Key(9)));
          return absl::OkStatus();
        },
        {.skip_disk = true});
    ASSERT_TRUE(got.ok()) << got.status();
  }
  EXPECT_EQ(store_->Stats().disk.hits, 0u);
  EXPECT_EQ(store_->Stats().promotions, 0u);
  // One real read is the page's first (promote_after_reads is 2).
  EXPECT_EQ((*store_->BatchGet({Key(1)}))[0].data, Expected(Key(1)));
  EXPECT_EQ(store_->Stats().disk.hits, 1u);
  EXPECT_EQ(store_->Stats().promotions, 0u);
}

TEST_F(InPlaceTest, UseErrorIsReturnedAfterTheLeasesAreReleased) {
  ASSERT_TRUE(PutPages(*store_, {Key(1), Key(2)}).ok());
  auto got = store_->BatchGetInPlace({Key(1), Key(2)}, [&](auto, auto) {
    return absl::UnavailableError("transfer failed");
  });
  EXPECT_EQ(got.status(), absl::UnavailableError("transfer failed"));
  // With a lease still held the slots would stay allocated as zombies.
  EXPECT_EQ(store_->Delete({Key(1), Key(2)}, false).value(), 2u);
  EXPECT_EQ(store_->Stats().ram.used_bytes, 0u);
  EXPECT_EQ(store_->Stats().ram.hits, 2u);
}

TEST_F(InPlaceTest, InvalidBatchesNeverCallUse) {
  int calls = 0;
  auto use = [&](auto, auto) {
    ++calls;
    return absl::OkStatus();
  };
  EXPECT_EQ(store_->BatchGetInPlace({}, use).status().code(), absl::StatusCode::kInvalidArgument);
  std::vector<PageKey> nine(9, Key(1));
  EXPECT_EQ(store_->BatchGetInPlace(nine, use).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(calls, 0);
}

// In-place readers check their bytes while other threads delete, re-put
// and evict the same keys; afterwards every slot is accounted for.
TEST_F(InPlaceTest, ReadsRacingDeletesAndPutsSeeIntactBytesAndLeakNothing) {
  Open(/*promote_after_reads=*/1);
  constexpr uint64_t kKeys = 24;
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      uint64_t x = 0x2545f4914f6cdd1dull + t;
      for (int i = 0; i < 300; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const PageKey a = Key(x % kKeys), b = Key((x >> 16) % kKeys);
        if (t % 2 == 1 && (x >> 40) % 2 == 0) {
          if (!store_->Delete({a}, true).ok()) ++bad;
          continue;
        }
        absl::Status put = PutPages(*store_, {a}).status();
        if (!put.ok() && !absl::IsResourceExhausted(put)) ++bad;
        const std::vector<PageKey> keys = a == b ? std::vector<PageKey>{a}
                                                 : std::vector<PageKey>{a, b};
        auto got = store_->BatchGetInPlace(keys, [&](auto results, auto bytes) {
          for (size_t k = 0; k < keys.size(); ++k) {
            if (absl::IsDataLoss(results[k].status)) ++bad;
            if (results[k].status.ok() && AsString(bytes[k]) != Expected(keys[k])) ++bad;
          }
          std::this_thread::yield();
          for (size_t k = 0; k < keys.size(); ++k) {
            if (results[k].status.ok() && AsString(bytes[k]) != Expected(keys[k])) ++bad;
          }
          return absl::OkStatus();
        });
        if (!got.ok()) ++bad;
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(bad.load(), 0);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.lost_pages, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.ram.used_bytes, stats.ram.pages * kPage);
  EXPECT_EQ(stats.disk.used_bytes, stats.disk.pages * kPage);
}

}  // namespace
}  // namespace kvtier::store
