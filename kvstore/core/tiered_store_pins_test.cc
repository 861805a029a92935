// Pins outlive the process: a pin acknowledged before a restart (graceful
// or not: nothing here closes the store specially) still holds its pages,
// with its id and expiry, after it.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <vector>
#include <string>

#include "absl/time/clock.h"
#include "common/endian.h"
#include "kvstore/core/rocks_tier.h"
#include "kvstore/core/store.h"
#include "testing/raw_rocks.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::Key;
using testing::PutPages;
using testing::RawRocks;
using testing::TempDir;

constexpr uint64_t kPage = 4096;  // SmallLayout
constexpr uint64_t kHourMs = 3'600'000;

StoreOptions Options(const std::string& dir, uint64_t disk_pages = 100) {
  StoreOptions o;
  o.data_dir = dir;
  o.ram = {.capacity_bytes = 10 * kPage, .high_watermark = 0.8, .low_watermark = 0.5};
  o.disk = {.capacity_bytes = disk_pages * kPage, .high_watermark = 0.9, .low_watermark = 0.8};
  return o;
}

void PutEach(Store& store, uint64_t first, uint64_t last) {
  for (uint64_t n = first; n <= last; ++n) ASSERT_TRUE(PutPages(store, {Key(n)}).ok()) << n;
}

bool Readable(Store& store, const PageKey& key) {
  auto got = store.BatchGet({key});
  return got.ok() && (*got)[0].status.ok();
}

TEST(PinPersistenceTest, APinComesBackWithItsIdAndPages) {
  TempDir dir;
  PinId pin_id;
  {
    auto store = *Store::Open(Options(dir.path()));
    PutEach(*store, 1, 3);
    pin_id = *store->Pin(0, {Key(1), Key(2)}, kHourMs, PinId{});
  }
  {
    auto store = *Store::Open(Options(dir.path()));
    const StoreStats stats = store->Stats();
    EXPECT_EQ(stats.active_pins, 1u);
    EXPECT_EQ(stats.disk.pinned_pages, 2u);
    // The same id works, and a new pin gets another. (Page 3 was only in
    // RAM, and unpinned: gone.)
    EXPECT_FALSE(Readable(*store, Key(3)));
    const absl::StatusOr<PinId> other = store->Pin(0, {Key(1)}, kHourMs, PinId{});
    ASSERT_TRUE(other.ok()) << other.status();
    EXPECT_NE(*other, pin_id);
    ASSERT_TRUE(store->Unpin(0, pin_id).ok());
    EXPECT_EQ(store->Stats().disk.pinned_pages, 1u);
  }
  // Unpinned before the restart: gone after it.
  auto store = *Store::Open(Options(dir.path()));
  EXPECT_EQ(store->Stats().active_pins, 1u);
  EXPECT_EQ(store->Unpin(0, pin_id).code(), absl::StatusCode::kNotFound);
}

TEST(PinPersistenceTest, ARestoredPinKeepsItsPagesThroughChurn) {
  TempDir dir;
  {
    auto store = *Store::Open(Options(dir.path(), /*disk_pages=*/20));
    PutEach(*store, 1, 2);
    ASSERT_TRUE(store->Pin(0, {Key(1), Key(2)}, kHourMs, PinId{}).ok());
  }
  auto store = *Store::Open(Options(dir.path(), /*disk_pages=*/20));
  PutEach(*store, 3, 200);  // ten times both tiers
  EXPECT_GT(store->Stats().dropped_pages, 100u);
  EXPECT_TRUE(Readable(*store, Key(1)));
  EXPECT_TRUE(Readable(*store, Key(2)));
  EXPECT_FALSE(Readable(*store, Key(3)));
}

TEST(HeldPagesTest, ListsEachPageOnceWithItsLatestPinExpiry) {
  TempDir dir;
  auto store = *Store::Open(Options(dir.path()));
  PutEach(*store, 1, 4);
  const int64_t before_ms = absl::ToUnixMillis(absl::Now());
  ASSERT_TRUE(store->Pin(0, {Key(1), Key(2)}, kHourMs, PinId{}).ok());
  ASSERT_TRUE(store->Pin(0, {Key(2)}, 2 * kHourMs, PinId{}).ok());
  const PinId short_pin = *store->Pin(0, {Key(3)}, kHourMs, PinId{});
  ASSERT_TRUE(store->Unpin(0, short_pin).ok());
  const int64_t after_ms = absl::ToUnixMillis(absl::Now());

  std::vector<HeldPage> pinned = store->HeldPages(/*pinned_only=*/true);
  auto by_key = [](const HeldPage& a, const HeldPage& b) { return a.key < b.key; };
  std::sort(pinned.begin(), pinned.end(), by_key);
  ASSERT_EQ(pinned.size(), 2u);  // page 3's pin is gone, page 4 never had one
  EXPECT_EQ(pinned[0].key, std::min(Key(1), Key(2)));
  EXPECT_EQ(pinned[1].key, std::max(Key(1), Key(2)));
  for (const HeldPage& page : pinned) {
    // The store's clock is converted to Unix time by sampling both: each
    // sample rounds to a millisecond, so one either side.
    const int64_t ttl_ms = page.key == Key(2) ? 2 * kHourMs : kHourMs;
    EXPECT_GE(page.pin_expiry_ms, before_ms + ttl_ms - 1);
    EXPECT_LE(page.pin_expiry_ms, after_ms + ttl_ms + 1);
  }
  // Every page, the unpinned ones with expiry 0.
  std::vector<HeldPage> all = store->HeldPages(/*pinned_only=*/false);
  std::sort(all.begin(), all.end(), by_key);
  ASSERT_EQ(all.size(), 4u);
  for (const HeldPage& page : all) {
    EXPECT_EQ(page.pin_expiry_ms > 0, page.key == Key(1) || page.key == Key(2));
  }
}

TEST(HeldPagesTest, AnExpiredPinHoldsNothing) {
  TempDir dir;
  auto store = *Store::Open(Options(dir.path()));
  PutEach(*store, 1, 1);
  ASSERT_TRUE(store->Pin(0, {Key(1)}, 30, PinId{}).ok());
  ASSERT_EQ(store->HeldPages(/*pinned_only=*/true).size(), 1u);
  absl::SleepFor(absl::Milliseconds(60));
  EXPECT_TRUE(store->HeldPages(/*pinned_only=*/true).empty());
  ASSERT_EQ(store->HeldPages(/*pinned_only=*/false).size(), 1u);
  EXPECT_EQ(store->HeldPages(/*pinned_only=*/false)[0].pin_expiry_ms, 0);
}

TEST(PinPersistenceTest, AnExpiredPinIsDroppedAndItsIdNeverReused) {
  TempDir dir;
  PinId pin_id;
  {
    auto store = *Store::Open(Options(dir.path()));
    PutEach(*store, 1, 1);
    pin_id = *store->Pin(0, {Key(1)}, 50, PinId{});
  }
  absl::SleepFor(absl::Milliseconds(100));
  {
    auto store = *Store::Open(Options(dir.path()));
    EXPECT_EQ(store->Stats().active_pins, 0u);
    EXPECT_EQ(store->Stats().disk.pinned_pages, 0u);
    EXPECT_EQ(store->Unpin(0, pin_id).code(), absl::StatusCode::kNotFound);
    EXPECT_NE(*store->Pin(0, {Key(1)}, kHourMs, PinId{}), pin_id);
  }
}

TEST(PinPersistenceTest, ExtensionsAndAddedPagesAreRecorded) {
  TempDir dir;
  {
    auto store = *Store::Open(Options(dir.path()));
    PutEach(*store, 1, 2);
    const PinId pin_id = *store->Pin(0, {Key(1)}, 50, PinId{});
    // Extends the pin to an hour and adds page 2.
    ASSERT_TRUE(store->Pin(0, {Key(2)}, kHourMs, pin_id).ok());
  }
  absl::SleepFor(absl::Milliseconds(100));  // past the first expiry
  auto store = *Store::Open(Options(dir.path()));
  EXPECT_EQ(store->Stats().active_pins, 1u);
  EXPECT_EQ(store->Stats().disk.pinned_pages, 2u);
}

TEST(PinPersistenceTest, APinnedPageDeletedByForceStaysDeleted) {
  TempDir dir;
  {
    auto store = *Store::Open(Options(dir.path()));
    PutEach(*store, 1, 2);
    ASSERT_TRUE(store->Pin(0, {Key(1), Key(2)}, kHourMs, PinId{}).ok());
    ASSERT_EQ(*store->Delete({Key(1)}, /*force=*/true), 1u);
  }
  auto store = *Store::Open(Options(dir.path()));
  EXPECT_EQ(store->Stats().active_pins, 1u);
  EXPECT_EQ(store->Stats().disk.pinned_pages, 1u);
  EXPECT_FALSE(Readable(*store, Key(1)));
}

PageKey TenantKey(uint64_t tenant, uint64_t n) {
  PageKey key = Key(n);
  key.tenant = tenant;
  return key;
}

TEST(PinPersistenceTest, APinStaysItsTenantsAcrossARestart) {
  TempDir dir;
  PinId pin_id;
  {
    auto store = *Store::Open(Options(dir.path()));
    ASSERT_TRUE(PutPages(*store, {TenantKey(7, 1), TenantKey(8, 1)}).ok());
    // A pin holds its own tenant's pages only.
    EXPECT_EQ(store->Pin(7, {TenantKey(8, 1)}, kHourMs, PinId{}).status().code(),
              absl::StatusCode::kInvalidArgument);
    pin_id = *store->Pin(7, {TenantKey(7, 1)}, kHourMs, PinId{});
    // Another tenant can neither extend nor end it.
    EXPECT_EQ(store->Pin(8, {}, kHourMs, pin_id).status().code(), absl::StatusCode::kNotFound);
    EXPECT_EQ(store->Unpin(8, pin_id).code(), absl::StatusCode::kNotFound);
  }
  auto store = *Store::Open(Options(dir.path()));
  EXPECT_EQ(store->Stats().active_pins, 1u);
  EXPECT_EQ(store->Stats().disk.pinned_pages, 1u);
  EXPECT_EQ(store->Unpin(8, pin_id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store->Unpin(0, pin_id).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store->Pin(7, {}, kHourMs, pin_id).ok());
  EXPECT_TRUE(store->Unpin(7, pin_id).ok());
  EXPECT_EQ(store->Stats().active_pins, 0u);
}

// Quotas are per tenant: one tenant at its pin count or pinned bytes is
// refused, with nothing pinned, while another pins on.
TEST(PinQuotaTest, ATenantAtItsQuotaIsRefusedAndNoOtherIs) {
  TempDir dir;
  StoreOptions options = Options(dir.path());
  options.tenant_max_pins = 2;
  options.tenant_max_pinned_bytes = 3 * kPage;
  {
    auto store = *Store::Open(options);
    ASSERT_TRUE(PutPages(*store, {TenantKey(7, 1), TenantKey(7, 2), TenantKey(7, 3),
                                  TenantKey(7, 4), TenantKey(8, 1), TenantKey(8, 2)})
                    .ok());
    const PinId first = *store->Pin(7, {TenantKey(7, 1), TenantKey(7, 2)}, kHourMs, PinId{});
    // A second pin of a page already pinned adds no pinned bytes.
    const PinId second = *store->Pin(7, {TenantKey(7, 2)}, kHourMs, PinId{});
    EXPECT_EQ(store->Pin(7, {TenantKey(7, 3)}, kHourMs, PinId{}).status().code(),
              absl::StatusCode::kResourceExhausted);  // a third pin
    // Two more pages would make 4 pinned pages (3 allowed): nothing pinned.
    EXPECT_EQ(store->Pin(7, {TenantKey(7, 3), TenantKey(7, 4)}, kHourMs, first).status().code(),
              absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(store->Stats().ram.pinned_pages, 2u);  // (written through: on disk too)
    ASSERT_TRUE(store->Pin(7, {TenantKey(7, 3), TenantKey(7, 3)}, kHourMs, first).ok());
    // The other tenant is not affected.
    ASSERT_TRUE(store->Pin(8, {TenantKey(8, 1)}, kHourMs, PinId{}).ok());
    ASSERT_TRUE(store->Pin(8, {TenantKey(8, 2)}, kHourMs, PinId{}).ok());
    // Ending a pin, or deleting a pinned page, gives the room back.
    ASSERT_TRUE(store->Unpin(7, second).ok());
    EXPECT_EQ(store->Pin(7, {TenantKey(7, 4)}, kHourMs, PinId{}).status().code(),
              absl::StatusCode::kResourceExhausted);  // 3 pinned pages already
    ASSERT_EQ(*store->Delete({TenantKey(7, 3)}, /*force=*/true), 1u);
    ASSERT_TRUE(store->Pin(7, {TenantKey(7, 4)}, kHourMs, PinId{}).ok());
    EXPECT_EQ(store->Stats().active_pins, 4u);
  }
  // A restart counts the restored pins and pinned pages again.
  auto store = *Store::Open(options);
  EXPECT_EQ(store->Stats().active_pins, 4u);
  ASSERT_TRUE(PutPages(*store, {TenantKey(7, 5)}).ok());
  EXPECT_EQ(store->Pin(7, {TenantKey(7, 5)}, kHourMs, PinId{}).status().code(),
            absl::StatusCode::kResourceExhausted);  // 2 pins already
}

std::string BigEndianId(uint64_t id) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(id >> (8 * (7 - i)));
  return out;
}

std::string ExpiryValue(int64_t unix_ms, uint8_t version = 1) {
  std::string out(9, '\0');
  out[0] = static_cast<char>(version);
  StoreLe64(reinterpret_cast<uint8_t*>(out.data() + 1), static_cast<uint64_t>(unix_ms));
  return out;
}

TEST(PinPersistenceTest, MalformedPinRecordsAreDeletedAndCounted) {
  TempDir dir;
  { ASSERT_TRUE(RocksTier::Open(dir.path()).ok()); }
  const int64_t later = absl::ToUnixMillis(absl::Now()) + kHourMs;
  {
    RawRocks raw(dir.path());
    ASSERT_TRUE(raw.ok()) << raw.status();
    auto* pins = raw.family(RocksTier::kPinsIndex);
    auto put = [&](const std::string& k, const std::string& v) {
      ASSERT_TRUE(raw.db().Put(rocksdb::WriteOptions(), pins, k, v).ok());
    };
    // One good pin with one page (a record of before tenants: tenant 0).
    put(BigEndianId(5), ExpiryValue(later));
    put(BigEndianId(5) + Key(9).Encode(), std::string(1, '\1'));
    // Bad: a page record of a pin that has no expiry record; an unknown
    // format version; id 0; an id past any the store gives; a key of the
    // wrong length; a page record with a value of the wrong length.
    put(BigEndianId(3) + Key(1).Encode(), std::string(1, '\1'));
    put(BigEndianId(7), ExpiryValue(later, /*version=*/2));
    put(BigEndianId(0), ExpiryValue(later));
    put(BigEndianId(~uint64_t{0}), ExpiryValue(later));
    put(BigEndianId(5) + "xyz", std::string(1, '\1'));
    put(BigEndianId(5) + Key(10).Encode(), "long");
  }
  {
    RecoveryReport report;
    ASSERT_TRUE(RocksTier::Open(dir.path(), {}, &report).ok());
    EXPECT_EQ(report.malformed_pin_records, 6u);
    ASSERT_EQ(report.pins.size(), 1u);
    EXPECT_EQ(report.pins[0].id, 5u);
    EXPECT_EQ(report.pins[0].expiry_unix_ms, later);
    EXPECT_EQ(report.pins[0].keys, std::vector<PageKey>{Key(9)});
  }
  RecoveryReport report;
  ASSERT_TRUE(RocksTier::Open(dir.path(), {}, &report).ok());
  EXPECT_EQ(report.malformed_pin_records, 0u);
  EXPECT_EQ(report.pins.size(), 1u);
}

}  // namespace
}  // namespace kvtier::store
