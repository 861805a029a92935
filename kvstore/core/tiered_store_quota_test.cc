// Tenants' bytes in each tier and their quotas: exact per-tenant counters
// through every move between tiers, room made from a tenant's own pages
// only, refusals, promotion within the quota, and quotas set at run time.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "kvstore/core/rocks_tier.h"
#include "kvstore/core/store.h"
#include "rocksdb/db.h"
#include "testing/raw_rocks.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::AsString;
using testing::PageBytes;
using testing::PutPages;
using testing::SmallLayout;
using testing::TempDir;

constexpr uint64_t kPage = 4096;  // SmallLayout's bytes, and its slot's
constexpr uint64_t kHourMs = 3'600'000;

StoreOptions Options(const std::string& dir, uint64_t ram_pages, uint64_t disk_pages) {
  StoreOptions o;
  o.data_dir = dir;
  o.ram = {.capacity_bytes = ram_pages * kPage, .high_watermark = 0.8, .low_watermark = 0.5};
  o.disk = {.capacity_bytes = disk_pages * kPage, .high_watermark = 0.9, .low_watermark = 0.8};
  o.verify_on_open = false;
  return o;
}

PageKey Key(uint64_t tenant, uint64_t n) {
  PageKey key = testing::Key(n);
  key.tenant = tenant;
  return key;
}

void PutEach(Store& store, uint64_t tenant, uint64_t first, uint64_t last) {
  for (uint64_t n = first; n <= last; ++n) {
    ASSERT_TRUE(PutPages(store, {Key(tenant, n)}).ok()) << tenant << ":" << n;
  }
}

// The tiers of `tenant`'s pages first..last.
std::vector<Tier> Tiers(Store& store, uint64_t tenant, uint64_t first, uint64_t last) {
  std::vector<Hash128> chain;
  for (uint64_t n = first; n <= last; ++n) chain.push_back(testing::Key(n).hash);
  return store.Lookup(tenant, chain, 0, 1)->tiers;
}

// `tenant`'s entry in Stats, or nullopt when it is not listed.
std::optional<TenantStats> Find(const StoreStats& stats, uint64_t tenant) {
  for (const TenantStats& t : stats.tenants) {
    if (t.tenant == tenant) return t;
  }
  return std::nullopt;
}

// The figures a test expects of one tenant.
struct Expected {
  uint64_t ram_pages = 0;
  uint64_t disk_pages = 0;
  uint64_t pins = 0;
  uint64_t pinned_pages = 0;
};

void ExpectTenant(Store& store, uint64_t tenant, const Expected& want) {
  const std::optional<TenantStats> got = Find(store.Stats(), tenant);
  ASSERT_TRUE(got.has_value()) << "tenant " << tenant << " not listed";
  EXPECT_EQ(got->ram_pages, want.ram_pages) << "tenant " << tenant;
  EXPECT_EQ(got->ram_bytes, want.ram_pages * kPage) << "tenant " << tenant;
  EXPECT_EQ(got->disk_pages, want.disk_pages) << "tenant " << tenant;
  EXPECT_EQ(got->disk_bytes, want.disk_pages * kPage) << "tenant " << tenant;
  EXPECT_EQ(got->pins, want.pins) << "tenant " << tenant;
  EXPECT_EQ(got->pinned_bytes, want.pinned_pages * kPage) << "tenant " << tenant;
}

// The tenants' figures add up to the tiers' own.
void ExpectSumsMatchTheTiers(Store& store) {
  const StoreStats stats = store.Stats();
  uint64_t ram = 0, disk = 0, ram_pages = 0, disk_pages = 0;
  for (const TenantStats& t : stats.tenants) {
    ram += t.ram_bytes;
    disk += t.disk_bytes;
    ram_pages += t.ram_pages;
    disk_pages += t.disk_pages;
  }
  EXPECT_EQ(ram, stats.ram.used_bytes);
  EXPECT_EQ(disk, stats.disk.used_bytes);
  EXPECT_EQ(ram_pages, stats.ram.pages);
  EXPECT_EQ(disk_pages, stats.disk.pages);
}

GetResult GetOne(Store& store, const PageKey& key) { return (*store.BatchGet({key}))[0]; }

const Tier R = Tier::kRam, D = Tier::kDisk, N = Tier::kNone;

TEST(TenantBytesTest, CountersFollowEveryMoveBetweenTiers) {
  TempDir dir;
  // RAM 10 pages: high 8, low 5.
  const StoreOptions options = Options(dir.path(), 10, 100);
  {
    auto store = *Store::Open(options);
    PutEach(*store, 7, 1, 3);
    PutEach(*store, 8, 1, 2);
    ExpectTenant(*store, 7, {.ram_pages = 3});
    ExpectTenant(*store, 8, {.ram_pages = 2});
    ASSERT_EQ(*store->Delete({Key(7, 1)}, /*force=*/false), 1u);
    ExpectTenant(*store, 7, {.ram_pages = 2});
    // 9 pages pass the high watermark: the 4 oldest are demoted.
    PutEach(*store, 8, 3, 7);
    EXPECT_EQ(store->Stats().demotions, 4u);
    EXPECT_EQ(Tiers(*store, 7, 2, 3), (std::vector<Tier>{D, D}));
    ExpectTenant(*store, 7, {.disk_pages = 2});
    ExpectTenant(*store, 8, {.ram_pages = 5, .disk_pages = 2});
    ExpectSumsMatchTheTiers(*store);
    // Promoted on its second read; its disk copy stays.
    EXPECT_EQ(GetOne(*store, Key(7, 2)).tier, D);
    EXPECT_EQ(GetOne(*store, Key(7, 2)).tier, D);
    EXPECT_EQ(store->Stats().promotions, 1u);
    ExpectTenant(*store, 7, {.ram_pages = 1, .disk_pages = 2});
    ExpectSumsMatchTheTiers(*store);
    // A reservation counts in RAM bytes at once, not in pages.
    absl::StatusOr<Reservation> reserved = store->Reserve({testing::Spec(Key(9, 1))});
    ASSERT_TRUE(reserved.ok()) << reserved.status();
    std::optional<TenantStats> nine = Find(store->Stats(), 9);
    ASSERT_TRUE(nine.has_value());
    EXPECT_EQ(nine->ram_bytes, kPage);
    EXPECT_EQ(nine->ram_pages, 0u);
    store->Abort(*std::move(reserved));
    EXPECT_FALSE(Find(store->Stats(), 9).has_value());  // no zero entries
    ExpectSumsMatchTheTiers(*store);
  }
  // A restart finds the disk pages, and counts them for their tenants.
  {
    auto store = *Store::Open(options);
    ExpectTenant(*store, 7, {.disk_pages = 2});
    ExpectTenant(*store, 8, {.disk_pages = 2});
    ExpectSumsMatchTheTiers(*store);
    ASSERT_EQ(*store->Delete({Key(7, 2), Key(7, 3)}, /*force=*/false), 2u);
    EXPECT_FALSE(Find(store->Stats(), 7).has_value());
    ExpectSumsMatchTheTiers(*store);
  }
  // A page that fails its checksum leaves its tenant's bytes.
  {
    testing::RawRocks raw(dir.path());
    ASSERT_TRUE(raw.ok()) << raw.status();
    const auto pages = raw.family(RocksTier::kPagesIndex);
    std::string value;
    ASSERT_TRUE(raw.db().Get(rocksdb::ReadOptions(), pages, Key(8, 1).Encode(), &value).ok());
    value[value.size() / 2] ^= 0x40;
    ASSERT_TRUE(raw.db().Put(rocksdb::WriteOptions(), pages, Key(8, 1).Encode(), value).ok());
  }
  auto store = *Store::Open(options);
  EXPECT_EQ(GetOne(*store, Key(8, 1)).status.code(), absl::StatusCode::kDataLoss);
  ExpectTenant(*store, 8, {.disk_pages = 1});
  ExpectSumsMatchTheTiers(*store);
}

TEST(TenantBytesTest, PinsAndPinnedBytesAreListed) {
  TempDir dir;
  auto store = *Store::Open(Options(dir.path(), 10, 100));
  PutEach(*store, 7, 1, 2);
  ASSERT_TRUE(store->Pin(7, {Key(7, 1), Key(7, 2)}, kHourMs, PinId{}).ok());
  ASSERT_TRUE(store->Pin(7, {Key(7, 1)}, kHourMs, PinId{}).ok());
  // Pinned pages are written through: on disk too.
  ExpectTenant(*store, 7, {.ram_pages = 2, .disk_pages = 2, .pins = 2, .pinned_pages = 2});
  ExpectSumsMatchTheTiers(*store);
}

class RamQuotaPolicyTest : public ::testing::TestWithParam<std::string> {};

// A tenant at its RAM quota demotes its own oldest pages, never another's,
// however much RAM is free.
TEST_P(RamQuotaPolicyTest, ATenantAtItsQuotaDemotesItsOwnPagesOnly) {
  TempDir dir;
  StoreOptions options = Options(dir.path(), 40, 100);  // high 32 pages
  options.ram.policy = GetParam();
  options.tenant_max_ram_bytes = 4 * kPage;
  auto store = *Store::Open(options);
  PutEach(*store, 8, 1, 4);  // 8 is at its quota
  PutEach(*store, 7, 1, 5);
  EXPECT_EQ(Tiers(*store, 7, 1, 5), (std::vector<Tier>{D, R, R, R, R}));
  EXPECT_EQ(Tiers(*store, 8, 1, 4), (std::vector<Tier>{R, R, R, R}));
  ExpectTenant(*store, 7, {.ram_pages = 4, .disk_pages = 1});
  // A batch of two makes room for two.
  ASSERT_TRUE(PutPages(*store, {Key(7, 6), Key(7, 7)}).ok());
  EXPECT_EQ(Tiers(*store, 7, 1, 7), (std::vector<Tier>{D, D, D, R, R, R, R}));
  EXPECT_EQ(Tiers(*store, 8, 1, 4), (std::vector<Tier>{R, R, R, R}));
  ExpectTenant(*store, 7, {.ram_pages = 4, .disk_pages = 3});
  ExpectTenant(*store, 8, {.ram_pages = 4});
  const StoreStats stats = store->Stats();
  EXPECT_EQ(stats.demotions, 3u);
  EXPECT_EQ(stats.dropped_pages, 0u);
  EXPECT_EQ(Find(stats, 7)->quota_refusals, 0u);
  EXPECT_EQ(Find(stats, 7)->quotas.max_ram_bytes, 4 * kPage);
  ExpectSumsMatchTheTiers(*store);
  // Every page reads back.
  for (uint64_t n = 1; n <= 7; ++n) {
    GetResult got = GetOne(*store, Key(7, n));
    ASSERT_TRUE(got.status.ok()) << n;
    EXPECT_EQ(got.data, AsString(PageBytes(Key(7, n), SmallLayout())));
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, RamQuotaPolicyTest, ::testing::Values("lru", "s3fifo"));

TEST(RamQuotaTest, PinnedOrReservedPagesCannotMakeRoomAndOtherTenantsPutOn) {
  TempDir dir;
  StoreOptions options = Options(dir.path(), 40, 100);
  options.tenant_max_ram_bytes = 2 * kPage;
  auto store = *Store::Open(options);
  PutEach(*store, 7, 1, 2);
  ASSERT_TRUE(store->Pin(7, {Key(7, 1), Key(7, 2)}, kHourMs, PinId{}).ok());
  const absl::Status refused = PutPages(*store, {Key(7, 3)}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(refused.message(), "RAM quota of 8192 bytes")) << refused;
  // Nothing of it stored or reserved; the pinned pages stay in RAM.
  EXPECT_EQ(Tiers(*store, 7, 1, 3), (std::vector<Tier>{R, R, N}));
  EXPECT_EQ(store->Stats().reserved_bytes, 0u);
  // Another tenant is not affected.
  ASSERT_TRUE(PutPages(*store, {Key(8, 1), Key(8, 2)}).ok());
  EXPECT_EQ(Tiers(*store, 8, 1, 2), (std::vector<Tier>{R, R}));
  // A batch larger than the quota is refused at once.
  const absl::Status too_large = PutPages(*store, {Key(8, 3), Key(8, 4), Key(8, 5)}).status();
  EXPECT_EQ(too_large.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(absl::StrContains(too_large.message(), "more than the tenant's RAM quota"))
      << too_large;
  StoreStats stats = store->Stats();
  EXPECT_EQ(Find(stats, 7)->quota_refusals, 1u);
  EXPECT_EQ(Find(stats, 8)->quota_refusals, 1u);
  ExpectTenant(*store, 7, {.ram_pages = 2, .disk_pages = 2, .pins = 1, .pinned_pages = 2});
  ExpectTenant(*store, 8, {.ram_pages = 2});

  // Reserved slots count and cannot make room either.
  absl::StatusOr<Reservation> first = store->Reserve({testing::Spec(Key(9, 1))});
  absl::StatusOr<Reservation> second = store->Reserve({testing::Spec(Key(9, 2))});
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(store->Reserve({testing::Spec(Key(9, 3))}).status().code(),
            absl::StatusCode::kResourceExhausted);
  store->Abort(*std::move(second));
  EXPECT_TRUE(store->Reserve({testing::Spec(Key(9, 3))}).ok());  // (aborted at once)
  EXPECT_EQ(Find(store->Stats(), 9)->quota_refusals, 1u);
}

TEST(RamQuotaTest, AReserveThatMayNotMakeRoomRefusesWithoutWriting) {
  TempDir dir;
  StoreOptions options = Options(dir.path(), 40, 100);
  options.tenant_max_ram_bytes = 2 * kPage;
  auto store = *Store::Open(options);
  PutEach(*store, 7, 1, 2);
  const ReserveOptions no_io{.make_room = false};
  EXPECT_EQ(store->Reserve({testing::Spec(Key(7, 3))}, no_io).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->Stats().demotions, 0u);
  EXPECT_EQ(Find(store->Stats(), 7)->quota_refusals, 0u);  // it goes again by RPC
  // A page stored already needs no room.
  EXPECT_TRUE(store->Reserve({testing::Spec(Key(7, 2))}, no_io).ok());
  // By RPC it makes room.
  ASSERT_TRUE(PutPages(*store, {Key(7, 3)}).ok());
  EXPECT_EQ(Tiers(*store, 7, 1, 3), (std::vector<Tier>{D, R, R}));
}

// Past its disk quota a tenant's demotions drop its own oldest disk pages;
// another tenant's stay.
TEST(DiskQuotaTest, ATenantPastItsDiskQuotaDropsItsOwnPages) {
  TempDir dir;
  StoreOptions options = Options(dir.path(), 40, 100);
  options.tenant_max_ram_bytes = 2 * kPage;
  options.tenant_max_disk_bytes = 3 * kPage;
  auto store = *Store::Open(options);
  PutEach(*store, 8, 1, 4);
  PutEach(*store, 7, 1, 7);
  EXPECT_EQ(Tiers(*store, 7, 1, 7), (std::vector<Tier>{N, N, D, D, D, R, R}));
  EXPECT_EQ(Tiers(*store, 8, 1, 4), (std::vector<Tier>{D, D, R, R}));
  const StoreStats stats = store->Stats();
  EXPECT_EQ(stats.dropped_pages, 2u);
  EXPECT_EQ(stats.disk.evictions, 2u);
  ExpectTenant(*store, 7, {.ram_pages = 2, .disk_pages = 3});
  ExpectTenant(*store, 8, {.ram_pages = 2, .disk_pages = 2});
  ExpectSumsMatchTheTiers(*store);
}

// When its disk quota holds only its pinned pages, a tenant's unpinned RAM
// page that must leave goes to nothing, as when the disk is full.
TEST(DiskQuotaTest, ADiskQuotaFullOfPinnedPagesDropsTheDemotedPage) {
  TempDir dir;
  StoreOptions options = Options(dir.path(), 40, 100);
  options.tenant_max_ram_bytes = 3 * kPage;
  options.tenant_max_disk_bytes = 2 * kPage;
  auto store = *Store::Open(options);
  PutEach(*store, 7, 1, 2);
  ASSERT_TRUE(store->Pin(7, {Key(7, 1), Key(7, 2)}, kHourMs, PinId{}).ok());  // on disk too
  PutEach(*store, 7, 3, 4);
  EXPECT_EQ(Tiers(*store, 7, 1, 4), (std::vector<Tier>{R, R, N, R}));
  EXPECT_EQ(store->Stats().dropped_pages, 1u);
  ExpectTenant(*store, 7, {.ram_pages = 3, .disk_pages = 2, .pins = 1, .pinned_pages = 2});
}

// A read does not promote past the RAM quota; it promotes once the
// tenant's own clean pages can make room.
TEST(RamQuotaTest, PromotionStaysWithinTheQuota) {
  TempDir dir;
  StoreOptions options = Options(dir.path(), 40, 100);
  options.tenant_max_ram_bytes = 2 * kPage;
  auto store = *Store::Open(options);
  PutEach(*store, 7, 1, 3);
  ASSERT_EQ(Tiers(*store, 7, 1, 3), (std::vector<Tier>{D, R, R}));
  const PinId pin = *store->Pin(7, {Key(7, 2), Key(7, 3)}, kHourMs, PinId{});
  for (int read = 0; read < 3; ++read) {
    GetResult got = GetOne(*store, Key(7, 1));
    ASSERT_TRUE(got.status.ok());
    EXPECT_EQ(got.tier, D);
    EXPECT_EQ(got.data, AsString(PageBytes(Key(7, 1), SmallLayout())));
  }
  EXPECT_EQ(store->Stats().promotions, 0u);
  ExpectTenant(*store, 7, {.ram_pages = 2, .disk_pages = 3, .pins = 1, .pinned_pages = 2});
  // Unpinned, the pages are clean (written through): one leaves RAM for it.
  ASSERT_TRUE(store->Unpin(7, pin).ok());
  EXPECT_EQ(GetOne(*store, Key(7, 1)).tier, D);
  EXPECT_EQ(store->Stats().promotions, 1u);
  EXPECT_EQ(Tiers(*store, 7, 1, 3), (std::vector<Tier>{R, D, R}));
  ExpectTenant(*store, 7, {.ram_pages = 2, .disk_pages = 3});
}

// Quotas of one tenant set at run time; lowering one below the usage
// removes nothing until the tenant's next put.
TEST(TenantQuotasTest, OwnQuotasReplaceTheDefaults) {
  TempDir dir;
  StoreOptions options = Options(dir.path(), 40, 100);
  options.tenant_max_pins = 5;
  auto store = *Store::Open(options);
  PutEach(*store, 7, 1, 3);
  PutEach(*store, 8, 1, 3);
  TenantQuotas seven;
  seven.max_ram_bytes = kPage;
  seven.max_pins = 1;
  store->SetTenantQuotas({{7, seven}});
  ExpectTenant(*store, 7, {.ram_pages = 3});
  EXPECT_EQ(Find(store->Stats(), 7)->quotas, seven);
  EXPECT_EQ(Find(store->Stats(), 8)->quotas, options.DefaultTenantQuotas());
  // The next put makes room for itself within the quota.
  ASSERT_TRUE(PutPages(*store, {Key(7, 4)}).ok());
  EXPECT_EQ(Tiers(*store, 7, 1, 4), (std::vector<Tier>{D, D, D, R}));
  EXPECT_EQ(Tiers(*store, 8, 1, 3), (std::vector<Tier>{R, R, R}));
  // The pin quota is its own too.
  ASSERT_TRUE(store->Pin(7, {Key(7, 4)}, kHourMs, PinId{}).ok());
  EXPECT_EQ(store->Pin(7, {Key(7, 3)}, kHourMs, PinId{}).status().code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(store->Pin(8, {Key(8, 1)}, kHourMs, PinId{}).ok());
  ASSERT_TRUE(store->Pin(8, {Key(8, 2)}, kHourMs, PinId{}).ok());
  // A tenant with quotas of its own is listed with nothing stored.
  store->SetTenantQuotas({{7, seven}, {9, seven}});
  ASSERT_TRUE(Find(store->Stats(), 9).has_value());
  EXPECT_EQ(Find(store->Stats(), 9)->ram_bytes, 0u);
  // Back to the defaults.
  store->SetTenantQuotas({});
  EXPECT_FALSE(Find(store->Stats(), 9).has_value());
  ASSERT_TRUE(PutPages(*store, {Key(7, 5), Key(7, 6)}).ok());
  EXPECT_EQ(Tiers(*store, 7, 4, 6), (std::vector<Tier>{R, R, R}));
}

}  // namespace
}  // namespace kvtier::store
