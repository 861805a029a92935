// Pages moving between tiers: demotion past the RAM high watermark,
// promotion on read, disk drops, pinned exhaustion, restart and corruption.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "kvstore/core/rocks_tier.h"
#include "kvstore/core/store.h"
#include "rocksdb/db.h"
#include "testing/raw_rocks.h"
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

StoreOptions Options(const std::string& dir, uint64_t ram_pages, double ram_high, double ram_low,
                     uint64_t disk_pages, double disk_high, double disk_low) {
  StoreOptions o;
  o.data_dir = dir;
  o.ram = {.capacity_bytes = ram_pages * kPage, .high_watermark = ram_high,
           .low_watermark = ram_low};
  o.disk = {.capacity_bytes = disk_pages * kPage, .high_watermark = disk_high,
            .low_watermark = disk_low};
  return o;
}

std::vector<Tier> Tiers(Store& store, uint64_t first, uint64_t last) {
  std::vector<Hash128> chain;
  for (uint64_t n = first; n <= last; ++n) chain.push_back(Key(n).hash);
  return store.Lookup(0, chain, 0, 1)->tiers;
}

GetResult GetOne(Store& store, const PageKey& key) { return (*store.BatchGet({key}))[0]; }

// Pages first..last come back with the bytes PutEach gave them.
void ExpectPagesBack(Store& store, uint64_t first, uint64_t last) {
  for (uint64_t n = first; n <= last; ++n) {
    GetResult got = GetOne(store, Key(n));
    ASSERT_TRUE(got.status.ok()) << n << ": " << got.status;
    EXPECT_EQ(got.data, AsString(PageBytes(Key(n), SmallLayout())));
  }
}

void PutEach(Store& store, uint64_t first, uint64_t last) {
  for (uint64_t n = first; n <= last; ++n) ASSERT_TRUE(PutPages(store, {Key(n)}).ok()) << n;
}

class DemotionTest : public ::testing::TestWithParam<std::string> {};

TEST_P(DemotionTest, PastHighWatermarkDemotesDownToLow) {
  TempDir dir;
  // 10 pages; high 8, low 5.
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8);
  o.ram.policy = GetParam();
  auto store = *Store::Open(o);
  PutEach(*store, 1, 8);
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.ram.pages, 8u);
  EXPECT_EQ(stats.demotions, 0u);
  PutEach(*store, 9, 9);
  stats = store->Stats();
  EXPECT_EQ(stats.demotions, 4u);
  EXPECT_EQ(stats.ram.pages, 5u);
  EXPECT_EQ(stats.ram.used_bytes, 5 * kPage);
  EXPECT_EQ(stats.ram.evictions, 4u);
  EXPECT_EQ(stats.disk.pages, 4u);
  EXPECT_EQ(stats.disk.used_bytes, 4 * kPage);
  EXPECT_EQ(stats.dropped_pages, 0u);
  // Both policies demote the four oldest pages (never accessed).
  const Tier D = Tier::kDisk, R = Tier::kRam;
  EXPECT_EQ(Tiers(*store, 1, 9), (std::vector<Tier>{D, D, D, D, R, R, R, R, R}));
  for (uint64_t n = 1; n <= 9; ++n) {
    GetResult got = GetOne(*store, Key(n));
    ASSERT_TRUE(got.status.ok()) << n;
    EXPECT_EQ(got.data, AsString(PageBytes(Key(n), SmallLayout())));
    EXPECT_EQ(got.tier, n <= 4 ? Tier::kDisk : Tier::kRam);
  }
  EXPECT_EQ(store->Stats().disk.hits, 4u);
}

INSTANTIATE_TEST_SUITE_P(Policies, DemotionTest, ::testing::Values("lru", "s3fifo"));

TEST(MakeRoomTest, ReserveThatMayNotMakeRoomRefusesInsteadOfWriting) {
  TempDir dir;
  // 10 pages; high 8, low 5.
  auto store = *Store::Open(Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8));
  PutEach(*store, 1, 7);
  const ReserveOptions no_io{.make_room = false};
  // The 8th page reaches the high watermark without passing it.
  absl::StatusOr<Reservation> eighth = store->Reserve({testing::Spec(Key(8))}, no_io);
  ASSERT_TRUE(eighth.ok()) << eighth.status();
  const std::vector<uint8_t> bytes = PageBytes(Key(8), SmallLayout());
  std::copy(bytes.begin(), bytes.end(), eighth->buffer(0).begin());
  ASSERT_TRUE(store->Commit(*std::move(eighth)).ok());
  // The 9th would pass it: refused, nothing reserved, nothing written.
  absl::StatusOr<Reservation> ninth = store->Reserve({testing::Spec(Key(9))}, no_io);
  EXPECT_EQ(ninth.status().code(), absl::StatusCode::kFailedPrecondition);
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.demotions, 0u);
  EXPECT_EQ(stats.disk.pages, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.ram.pages, 8u);
  // A page already stored needs no slot, so it is never refused.
  EXPECT_TRUE(store->Reserve({testing::Spec(Key(3))}, no_io).ok());
  // The same put allowed to make room demotes as before.
  ASSERT_TRUE(PutPages(*store, {Key(9)}).ok());
  stats = store->Stats();
  EXPECT_EQ(stats.demotions, 4u);
  EXPECT_EQ(stats.ram.pages, 5u);
}

TEST(MakeRoomTest, BytesOfSplitsRamFromDiskOnly) {
  TempDir dir;
  auto store = *Store::Open(Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8));
  PutEach(*store, 1, 9);  // 1-4 demoted to disk, 5-9 in RAM
  const uint64_t page = SmallLayout().PageBytes();
  const Store::StoredBytes bytes = store->BytesOf({Key(1), Key(9), Key(99), Key(9), Key(2)});
  EXPECT_EQ(bytes.ram, 2 * page);
  EXPECT_EQ(bytes.disk_only, 2 * page);
  EXPECT_EQ(store->BytesOf({Key(99)}).ram + store->BytesOf({Key(99)}).disk_only, 0u);
}

TEST(RecoveryTest, DemoteAllWritesRamOnlyPagesWithinItsDeadline) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8);
  {
    auto store = *Store::Open(o);
    PutEach(*store, 1, 9);  // 1-4 on disk, 5-9 only in RAM
    ASSERT_EQ(store->Stats().disk.pages, 4u);
    absl::StatusOr<uint64_t> none = store->DemoteAll(absl::InfinitePast());
    ASSERT_TRUE(none.ok());
    EXPECT_EQ(*none, 0u);
    absl::StatusOr<uint64_t> written = store->DemoteAll(absl::Now() + absl::Seconds(60));
    ASSERT_TRUE(written.ok()) << written.status();
    EXPECT_EQ(*written, 5u);
    const StoreStats stats = store->Stats();
    EXPECT_EQ(stats.disk.pages, 9u);
    EXPECT_EQ(stats.ram.pages, 5u);  // still served from RAM
    EXPECT_EQ(*store->DemoteAll(absl::Now() + absl::Seconds(60)), 0u);  // nothing left
  }
  auto store = *Store::Open(o);
  EXPECT_EQ(store->Stats().disk.pages, 9u);
  ASSERT_NO_FATAL_FAILURE(ExpectPagesBack(*store, 1, 9));
}

TEST(PromotionTest, DiskPageIsPromotedOnItsNthRead) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8);
  o.promote_after_reads = 2;
  auto store = *Store::Open(o);
  PutEach(*store, 1, 9);  // 1..4 on disk
  EXPECT_EQ(GetOne(*store, Key(1)).tier, Tier::kDisk);
  EXPECT_EQ(store->Stats().promotions, 0u);
  GetResult second = GetOne(*store, Key(1));
  EXPECT_EQ(second.tier, Tier::kDisk);
  EXPECT_EQ(second.data, AsString(PageBytes(Key(1), SmallLayout())));
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.promotions, 1u);
  EXPECT_EQ(stats.ram.pages, 6u);
  EXPECT_EQ(stats.disk.pages, 4u);  // the disk copy stays
  GetResult third = GetOne(*store, Key(1));
  EXPECT_EQ(third.tier, Tier::kRam);
  EXPECT_EQ(third.data, AsString(PageBytes(Key(1), SmallLayout())));
  EXPECT_EQ(Tiers(*store, 1, 2), (std::vector<Tier>{Tier::kRam, Tier::kDisk}));
  // One read of another disk page does not promote it (the admission filter).
  EXPECT_EQ(GetOne(*store, Key(2)).tier, Tier::kDisk);
  EXPECT_EQ(store->Stats().promotions, 1u);
}

TEST(PromotionTest, PromotedCleanPageLeavesRamWithoutAWrite) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8);
  o.promote_after_reads = 1;
  auto store = *Store::Open(o);
  PutEach(*store, 1, 9);  // RAM 5..9, disk 1..4
  ASSERT_EQ(GetOne(*store, Key(1)).tier, Tier::kDisk);
  ASSERT_EQ(store->Stats().promotions, 1u);  // RAM 5..9, 1
  // LRU, oldest first: 5 6 7 8 9 1. Page 12 demotes 5..8 (four writes);
  // page 16 evicts 9, 1, 10, 11 and writes only three: 1 is already on disk.
  PutEach(*store, 10, 16);
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.ram.pages, 5u);
  EXPECT_EQ(stats.demotions, 4u + 4u + 3u);
  EXPECT_EQ(stats.ram.evictions, 4u + 4u + 4u);
  EXPECT_EQ(stats.disk.pages, 11u);
  EXPECT_EQ(Tiers(*store, 1, 1), std::vector<Tier>{Tier::kDisk});
}

// Bytes in and out of each tier: puts and promotions enter RAM, demotions
// enter the disk, and each read counts where it was served from.
TEST(TierBytesTest, EachTierCountsTheBytesThatEnterAndLeaveIt) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 16, 0.9, 0.8, 16, 0.9, 0.8);
  o.promote_after_reads = 1;
  auto store = *Store::Open(o);
  PutEach(*store, 1, 3);
  ASSERT_TRUE(PutPages(*store, {Key(1)}).ok());  // a duplicate enters nothing
  StoreStats s = store->Stats();
  EXPECT_EQ(s.ram.bytes_in, 3 * kPage);
  EXPECT_EQ(s.disk.bytes_in, 0u);
  ExpectPagesBack(*store, 1, 2);
  ASSERT_EQ(GetOne(*store, Key(9)).status.code(), absl::StatusCode::kNotFound);  // a miss
  s = store->Stats();
  EXPECT_EQ(s.ram.bytes_out, 2 * kPage);
  EXPECT_EQ(s.disk.bytes_out, 0u);
  // Demoted to disk (and kept in RAM), then evicted from RAM: reads come
  // from the disk and promote the page back (promote_after_reads 1).
  ASSERT_EQ(*store->DemoteAll(absl::InfiniteFuture()), 3u);
  s = store->Stats();
  EXPECT_EQ(s.disk.bytes_in, 3 * kPage);
  ASSERT_TRUE(store->Pin(0, {Key(3)}, 60'000, PinId{}).ok());  // on disk already: no write
  EXPECT_EQ(store->Stats().disk.bytes_in, 3 * kPage);
  // More puts push page 1 (clean, least recent) out of RAM without a write.
  PutEach(*store, 4, 18);
  ASSERT_EQ(Tiers(*store, 1, 1), std::vector<Tier>{Tier::kDisk});
  const StoreStats before = store->Stats();
  ExpectPagesBack(*store, 1, 1);
  s = store->Stats();
  EXPECT_EQ(s.disk.bytes_out - before.disk.bytes_out, kPage);
  EXPECT_EQ(s.ram.bytes_out, before.ram.bytes_out);
  EXPECT_EQ(s.promotions - before.promotions, 1u);
  EXPECT_EQ(s.ram.bytes_in - before.ram.bytes_in, kPage);  // the promotion
}

TEST(DiskTierTest, PastDiskWatermarkDropsUnpinnedPagesOnly) {
  TempDir dir;
  // RAM 4 pages (high 3, low 2); disk 4 pages (high 3, low 2).
  auto store = *Store::Open(Options(dir.path(), 4, 0.75, 0.5, 4, 0.75, 0.5));
  PutEach(*store, 1, 4);  // RAM 3, 4; disk 1, 2
  EXPECT_EQ(Tiers(*store, 1, 4),
            (std::vector<Tier>{Tier::kDisk, Tier::kDisk, Tier::kRam, Tier::kRam}));
  ASSERT_TRUE(store->Pin(0, {Key(1)}, 60'000, PinId{}).ok());
  // Page 6 demotes 3 and 4; room for 4 drops unpinned 2 but never pinned 1.
  PutEach(*store, 5, 6);
  const Tier D = Tier::kDisk, R = Tier::kRam, N = Tier::kNone;
  EXPECT_EQ(Tiers(*store, 1, 6), (std::vector<Tier>{D, N, D, D, R, R}));
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.dropped_pages, 1u);
  EXPECT_EQ(stats.disk.evictions, 1u);
  EXPECT_EQ(stats.disk.pages, 3u);
  EXPECT_EQ(stats.disk.used_bytes, 3 * kPage);
  EXPECT_EQ(stats.disk.pinned_pages, 1u);
  EXPECT_EQ(GetOne(*store, Key(2)).status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetOne(*store, Key(1)).data, AsString(PageBytes(Key(1), SmallLayout())));
}

// A pin writes RAM-only pages through to disk, so pinned pages always have
// a disk copy: when the disk is full of pinned pages, a pin that would need
// more is refused and pins nothing, and RAM can always make room.
TEST(DiskTierTest, DiskFullOfPinnedPagesRefusesPinsNotPuts) {
  TempDir dir;
  // RAM and disk: 2 pages each, high 1.0, low 0.5.
  auto store = *Store::Open(Options(dir.path(), 2, 1.0, 0.5, 2, 1.0, 0.5));
  PutEach(*store, 1, 2);
  absl::StatusOr<PinId> pin1 = store->Pin(0, {Key(1)}, 60'000, PinId{});
  absl::StatusOr<PinId> pin2 = store->Pin(0, {Key(2)}, 60'000, PinId{});
  ASSERT_TRUE(pin1.ok()) << pin1.status();
  ASSERT_TRUE(pin2.ok()) << pin2.status();
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.ram.pinned_pages, 2u);
  EXPECT_EQ(stats.disk.pinned_pages, 2u);
  EXPECT_EQ(stats.demotions, 2u);

  PutEach(*store, 3, 4);  // 1 and 2 leave RAM without a write
  const Tier D = Tier::kDisk, R = Tier::kRam, N = Tier::kNone;
  ASSERT_EQ(Tiers(*store, 1, 4), (std::vector<Tier>{D, D, R, R}));
  EXPECT_EQ(store->Stats().demotions, 2u);

  absl::StatusOr<PinId> refused = store->Pin(0, {Key(3)}, 60'000, PinId{});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  refused = store->Pin(0, {Key(4)}, 60'000, *pin1);  // extending: the key is not added
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted);
  stats = store->Stats();
  EXPECT_EQ(stats.active_pins, 2u);
  EXPECT_EQ(stats.ram.pinned_pages, 0u);
  EXPECT_EQ(*store->Delete({Key(4)}, /*force=*/false), 1u);  // not pinned

  // A put still finds room: unpinned page 3 goes to nothing.
  ASSERT_TRUE(PutPages(*store, {Key(5), Key(6)}).ok());
  EXPECT_EQ(Tiers(*store, 1, 6), (std::vector<Tier>{D, D, N, N, R, R}));
  EXPECT_EQ(store->Stats().dropped_pages, 1u);

  // Unpinning page 1 lets the disk drop it to take the next pinned page.
  ASSERT_TRUE(store->Unpin(0, *pin1).ok());
  ASSERT_TRUE(store->Pin(0, {Key(5)}, 60'000, *pin2).ok());
  stats = store->Stats();
  EXPECT_EQ(stats.disk.pinned_pages, 2u);
  EXPECT_EQ(stats.dropped_pages, 2u);
  EXPECT_EQ(GetOne(*store, Key(1)).status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetOne(*store, Key(5)).data, AsString(PageBytes(Key(5), SmallLayout())));
}

TEST(DiskTierTest, PageLargerThanRamIsResourceExhausted) {
  TempDir dir;
  auto store = *Store::Open(Options(dir.path(), 2, 1.0, 0.5, 100, 1.0, 0.5));
  PageLayout big = SmallLayout();
  big.page_size = 64;  // 16 KiB
  EXPECT_EQ(PutPages(*store, {Key(1)}, big).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store->Stats().reserved_bytes, 0u);
}

TEST(DiskTierTest, TwoLayoutsShareRam) {
  TempDir dir;
  // RAM 4 pages of 4 KiB, high 1.0 low 0.5; plenty of disk.
  auto store = *Store::Open(Options(dir.path(), 4, 1.0, 0.5, 100, 1.0, 0.5));
  PutEach(*store, 1, 4);
  PageLayout big = SmallLayout();
  big.page_size = 32;  // 8 KiB
  // RAM is full of 4 KiB slots. Room is made down to the low watermark
  // with the new page counted (8 KiB - 8 KiB = 0): all four leave, and
  // their freed slots merge into the 8 KiB one.
  ASSERT_TRUE(PutPages(*store, {Key(100)}, big).ok());
  GetResult got = GetOne(*store, Key(100));
  ASSERT_TRUE(got.status.ok());
  EXPECT_EQ(got.tier, Tier::kRam);
  EXPECT_EQ(got.data, AsString(PageBytes(Key(100), big)));
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.ram.used_bytes, 2 * kPage);
  EXPECT_EQ(stats.ram.pages, 1u);
  EXPECT_EQ(stats.demotions, 4u);
  for (uint64_t n = 1; n <= 4; ++n) {
    EXPECT_EQ(GetOne(*store, Key(n)).data, AsString(PageBytes(Key(n), SmallLayout()))) << n;
  }
}

TEST(RecoveryTest, DiskPagesComeBackAfterRestart) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8);
  {
    auto store = *Store::Open(o);
    PutEach(*store, 1, 9);  // 1..4 on disk, 5..9 in RAM only
  }
  auto store = *Store::Open(o);
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.disk.pages, 4u);
  EXPECT_EQ(stats.disk.used_bytes, 4 * kPage);
  EXPECT_EQ(stats.ram.pages, 0u);
  EXPECT_EQ(stats.lost_pages, 0u);
  for (uint64_t n = 1; n <= 9; ++n) {
    GetResult got = GetOne(*store, Key(n));
    if (n <= 4) {
      ASSERT_TRUE(got.status.ok()) << n;
      EXPECT_EQ(got.data, AsString(PageBytes(Key(n), SmallLayout())));
      EXPECT_EQ(got.checksum, testing::Spec(Key(n)).checksum);
      EXPECT_EQ(got.tier, Tier::kDisk);
    } else {
      EXPECT_EQ(got.status.code(), absl::StatusCode::kNotFound) << n;
    }
  }
}

// Pages only in RAM are lost at a restart unless pinned: Pin (new or
// extended) writes them through to disk before it returns.
TEST(RecoveryTest, PinnedRamPagesComeBackAfterRestart) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8);
  {
    auto store = *Store::Open(o);
    PutEach(*store, 1, 4);
    ASSERT_EQ(store->Stats().disk.pages, 0u);
    absl::StatusOr<PinId> pin = store->Pin(0, {Key(1), Key(2), Key(1)}, 60'000, PinId{});
    ASSERT_TRUE(pin.ok()) << pin.status();
    ASSERT_TRUE(store->Pin(0, {Key(3)}, 60'000, *pin).ok());
    StoreStats stats = store->Stats();
    EXPECT_EQ(stats.disk.pages, 3u);
    EXPECT_EQ(stats.disk.used_bytes, 3 * kPage);
    EXPECT_EQ(stats.disk.pinned_pages, 3u);
    EXPECT_EQ(stats.ram.pages, 4u);  // still served from RAM
    EXPECT_EQ(GetOne(*store, Key(1)).tier, Tier::kRam);
    // Pinning again writes nothing more.
    ASSERT_TRUE(store->Pin(0, {Key(1)}, 60'000, PinId{}).ok());
    EXPECT_EQ(store->Stats().demotions, 3u);
  }
  auto store = *Store::Open(o);
  EXPECT_EQ(store->Stats().disk.pages, 3u);
  ASSERT_NO_FATAL_FAILURE(ExpectPagesBack(*store, 1, 3));
  EXPECT_EQ(GetOne(*store, Key(4)).status.code(), absl::StatusCode::kNotFound);
}

// Flips one byte of a page's stored value, opening RocksDB directly.
void CorruptOnDisk(const std::string& dir, const PageKey& key) {
  testing::RawRocks raw(dir);
  ASSERT_TRUE(raw.ok()) << raw.status();
  const auto pages = raw.family(RocksTier::kPagesIndex);
  std::string value;
  ASSERT_TRUE(raw.db().Get(rocksdb::ReadOptions(), pages, key.Encode(), &value).ok());
  value[value.size() / 2] ^= 0x40;
  ASSERT_TRUE(raw.db().Put(rocksdb::WriteOptions(), pages, key.Encode(), value).ok());
}

TEST(CorruptionTest, MissingDiskValueIsLostNotNotFound) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8);
  o.verify_on_open = false;
  {
    auto store = *Store::Open(o);
    PutEach(*store, 1, 9);  // 1..4 on disk
  }
  {
    testing::RawRocks raw(dir.path());
    ASSERT_TRUE(raw.ok()) << raw.status();
    ASSERT_TRUE(raw.db()
                    .Delete(rocksdb::WriteOptions(), raw.family(RocksTier::kPagesIndex),
                            Key(3).Encode())
                    .ok());
  }
  auto store = *Store::Open(o);
  EXPECT_EQ(GetOne(*store, Key(3)).status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store->Stats().lost_pages, 1u);
  EXPECT_EQ(store->Stats().disk.pages, 3u);
  EXPECT_EQ(GetOne(*store, Key(3)).status.code(), absl::StatusCode::kNotFound);
}

// Waits for the background check of the pages found at Open.
void AwaitVerified(Store& store) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);  // a hang, not a speed
  while (store.Stats().unverified_disk_pages > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  ASSERT_EQ(store.Stats().unverified_disk_pages, 0u);
}

class CorruptionOnDiskTest : public ::testing::TestWithParam<bool> {};

TEST_P(CorruptionOnDiskTest, CorruptDiskPageIsDroppedCountedAndNeverReturned) {
  const bool verify_on_open = GetParam();
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 100, 0.9, 0.8);
  o.verify_on_open = verify_on_open;
  {
    auto store = *Store::Open(o);
    PutEach(*store, 1, 9);  // 1..4 on disk
  }
  CorruptOnDisk(dir.path(), Key(2));
  auto store = *Store::Open(o);
  ASSERT_NO_FATAL_FAILURE(AwaitVerified(*store));
  EXPECT_EQ(store->Stats().lost_pages, verify_on_open ? 1u : 0u);
  auto got = store->BatchGet({Key(1), Key(2), Key(3)});
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE((*got)[0].status.ok());
  EXPECT_TRUE((*got)[2].status.ok());
  EXPECT_EQ((*got)[1].status.code(),
            verify_on_open ? absl::StatusCode::kNotFound : absl::StatusCode::kDataLoss);
  EXPECT_TRUE((*got)[1].data.empty());
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.lost_pages, 1u);
  EXPECT_EQ(stats.disk.pages, 3u);
  EXPECT_EQ(stats.disk.used_bytes, 3 * kPage);
  EXPECT_EQ(Tiers(*store, 2, 2), std::vector<Tier>{Tier::kNone});
  EXPECT_EQ(GetOne(*store, Key(2)).status.code(), absl::StatusCode::kNotFound);
  // The bad records are gone from RocksDB: a restart does not see them.
  store.reset();
  store = *Store::Open(o);
  EXPECT_EQ(store->Stats().disk.pages, 3u);
  EXPECT_EQ(store->Stats().lost_pages, 0u);
}

INSTANTIATE_TEST_SUITE_P(VerifyOnOpen, CorruptionOnDiskTest, ::testing::Bool());

// The store serves while the background check runs: a read racing it gets
// the good pages and never the bad one, which is counted lost once, by
// whichever finds it first.
TEST(BackgroundVerifyTest, ReadsDuringTheCheckNeverReturnABadPage) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 1000, 0.9, 0.8);
  uint64_t disk_pages = 0;
  {
    auto store = *Store::Open(o);
    PutEach(*store, 1, 200);  // the first 190 or so only on disk
    disk_pages = store->Stats().disk.pages;
  }
  ASSERT_GT(disk_pages, 180u);
  CorruptOnDisk(dir.path(), Key(7));
  auto store = *Store::Open(o);
  EXPECT_LE(store->Stats().unverified_disk_pages, disk_pages);
  auto got = store->BatchGet({Key(7), Key(8), Key(180)});
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE((*got)[0].status.ok());
  EXPECT_TRUE((*got)[0].data.empty());
  EXPECT_TRUE((*got)[1].status.ok()) << (*got)[1].status;
  EXPECT_TRUE((*got)[2].status.ok()) << (*got)[2].status;
  EXPECT_EQ((*got)[1].data, AsString(PageBytes(Key(8), SmallLayout())));
  EXPECT_EQ((*got)[2].data, AsString(PageBytes(Key(180), SmallLayout())));
  ASSERT_NO_FATAL_FAILURE(AwaitVerified(*store));
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.lost_pages, 1u);
  EXPECT_EQ(stats.disk.pages, disk_pages - 1);
  EXPECT_EQ(GetOne(*store, Key(7)).status.code(), absl::StatusCode::kNotFound);
}

// Destroying the store stops the check without waiting for it to finish.
TEST(BackgroundVerifyTest, ClosingDuringTheCheckIsClean) {
  TempDir dir;
  StoreOptions o = Options(dir.path(), 10, 0.8, 0.5, 1000, 0.9, 0.8);
  uint64_t disk_pages = 0;
  {
    auto store = *Store::Open(o);
    PutEach(*store, 1, 200);
    disk_pages = store->Stats().disk.pages;
  }
  for (int i = 0; i < 3; ++i) {
    auto store = *Store::Open(o);
    EXPECT_EQ(store->Stats().disk.pages, disk_pages);
  }
  auto store = *Store::Open(o);
  ASSERT_NO_FATAL_FAILURE(AwaitVerified(*store));
  EXPECT_EQ(store->Stats().lost_pages, 0u);
}

}  // namespace
}  // namespace kvtier::store
