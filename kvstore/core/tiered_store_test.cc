// The Store API: puts, gets, lookups, reservations, pins, deletes, and
// concurrent use. Tier movement is in tiered_store_tiers_test.cc.
#include <gtest/gtest.h>

#include <thread>

#include "common/clock.h"
#include "kvstore/core/store.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::AsString;
using testing::Key;
using testing::PageBytes;
using testing::PutPages;
using testing::SmallLayout;
using testing::Spec;
using testing::TempDir;

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.data_dir = dir_.path();
    options_.ram.capacity_bytes = 1 << 20;
    options_.disk.capacity_bytes = 4 << 20;
    options_.max_batch_pages = 8;
    options_.max_lookup_pages = 16;
    options_.max_pin_ttl_ms = 10'000;
    options_.clock = &clock_;
    auto store = Store::Open(options_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  GetResult GetOne(const PageKey& key) {
    auto results = store_->BatchGet({key});
    EXPECT_TRUE(results.ok());
    return (*results)[0];
  }

  TempDir dir_;
  FakeClock clock_;
  StoreOptions options_;
  std::unique_ptr<Store> store_;
};

PageKey OfTenant(uint64_t tenant, PageKey key) {
  key.tenant = tenant;
  return key;
}

// Two tenants' equal keys are two pages: neither sees, reads, pins or
// deletes the other's, and both survive a restart as they were.
TEST_F(StoreTest, TenantsHaveSeparateKeySpaces) {
  const PageKey a = OfTenant(7, Key(1));
  const PageKey b = OfTenant(8, Key(1));
  ASSERT_TRUE(PutPages(*store_, {a}).ok());
  // Tenant 8 sees an absent key, exactly as for a key nobody stored.
  EXPECT_EQ(GetOne(b).status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Lookup(8, {Key(1).hash}, 0, 1)->tiers, std::vector<Tier>{Tier::kNone});
  EXPECT_EQ(store_->Lookup(7, {Key(1).hash}, 0, 1)->tiers, std::vector<Tier>{Tier::kRam});
  EXPECT_EQ(store_->Lookup(0, {Key(1).hash}, 0, 1)->prefix_pages, 0u);
  EXPECT_EQ(store_->Pin(8, {b}, 100, PinId{}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->Delete({b}, /*force=*/true), 0u);
  // Its own put of the same key is a new page with its own bytes.
  auto put = PutPages(*store_, {b});
  ASSERT_TRUE(put.ok());
  EXPECT_FALSE((*put)[0].already_present);
  EXPECT_EQ(GetOne(a).data, AsString(PageBytes(a, SmallLayout())));
  EXPECT_EQ(GetOne(b).data, AsString(PageBytes(b, SmallLayout())));
  EXPECT_NE(GetOne(a).data, GetOne(b).data);
  EXPECT_EQ(store_->Stats().ram.pages, 2u);
  // Through the disk tier and a restart, each keeps its own.
  ASSERT_EQ(*store_->DemoteAll(absl::InfiniteFuture()), 2u);
  store_.reset();
  store_ = *Store::Open(options_);
  EXPECT_EQ(store_->Stats().disk.pages, 2u);
  EXPECT_EQ(GetOne(a).data, AsString(PageBytes(a, SmallLayout())));
  EXPECT_EQ(GetOne(b).data, AsString(PageBytes(b, SmallLayout())));
  EXPECT_EQ(*store_->Delete({a}, /*force=*/false), 1u);
  EXPECT_EQ(GetOne(a).status.code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(GetOne(b).status.ok());
}

TEST_F(StoreTest, PutThenGetReturnsIdenticalBytes) {
  auto put = PutPages(*store_, {Key(1), Key(2, 5)});
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_FALSE((*put)[0].already_present);
  auto got = store_->BatchGet({Key(2, 5), Key(3), Key(1)});
  ASSERT_TRUE(got.ok());
  ASSERT_EQ(got->size(), 3u);
  EXPECT_TRUE((*got)[0].status.ok());
  EXPECT_EQ((*got)[0].data, AsString(PageBytes(Key(2, 5), SmallLayout())));
  EXPECT_EQ((*got)[0].layout, SmallLayout());
  EXPECT_EQ((*got)[0].checksum, Spec(Key(2, 5)).checksum);
  EXPECT_EQ((*got)[0].tier, Tier::kRam);
  EXPECT_EQ((*got)[1].status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*got)[1].tier, Tier::kNone);
  EXPECT_EQ((*got)[2].data, AsString(PageBytes(Key(1), SmallLayout())));

  auto again = PutPages(*store_, {Key(1), Key(4)});
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)[0].already_present);
  EXPECT_FALSE((*again)[1].already_present);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.put_pages, 3u);
  EXPECT_EQ(stats.put_duplicate_pages, 1u);
  EXPECT_EQ(stats.get_misses, 1u);
  EXPECT_EQ(stats.ram.hits, 2u);
  EXPECT_EQ(stats.ram.pages, 3u);
  EXPECT_EQ(stats.ram.used_bytes, 3u * 4096);
  EXPECT_EQ(stats.reserved_bytes, 0u);
}

TEST_F(StoreTest, LookupGivesLongestPrefixAndEveryTier) {
  const Hash128 h1{.hi = 0x5eed, .lo = 1}, h2{.hi = 0x5eed, .lo = 2}, h3{.hi = 0x5eed, .lo = 3};
  ASSERT_TRUE(PutPages(*store_, {Key(1, 4), Key(1, 5), Key(2, 4), Key(3, 4), Key(3, 5)}).ok());
  auto r = store_->Lookup(0, {h1, h2, h3}, 4, 2);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->prefix_pages, 1u);
  EXPECT_EQ(r->tiers, (std::vector<Tier>{Tier::kRam, Tier::kRam, Tier::kRam, Tier::kNone,
                                         Tier::kRam, Tier::kRam}));
  auto one_layer = store_->Lookup(0, {h1, h2, h3}, 4, 0);  // 0 means 1
  ASSERT_TRUE(one_layer.ok());
  EXPECT_EQ(one_layer->prefix_pages, 3u);
  EXPECT_EQ(one_layer->tiers.size(), 3u);
  auto none = store_->Lookup(0, {h2}, 9, 1);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->prefix_pages, 0u);
  EXPECT_EQ(none->tiers, std::vector<Tier>{Tier::kNone});

  std::vector<Hash128> too_long(17, h1);
  EXPECT_EQ(store_->Lookup(0, too_long, 0, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Lookup(0, {h1}, 0, Store::kMaxLookupLayers + 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Lookup(0, {h1}, 0xffffffffu, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Stats().lookups, 3u);
}

// Chain length and layer count are each bounded, and so is their product.
TEST_F(StoreTest, LookupEntriesAreBoundedAndLongLookupsSeeEveryPage) {
  store_.reset();
  options_.ram.capacity_bytes = 64 << 20;
  options_.max_lookup_pages = 8192;
  options_.max_lookup_entries = 3 * 8192;
  store_ = *Store::Open(options_);
  std::vector<Hash128> chain(8192);
  for (uint64_t i = 0; i < chain.size(); ++i) chain[i] = Key(100 + i).hash;
  EXPECT_EQ(store_->Lookup(0, chain, 0, 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Stats().lookups, 0u);
  // Pages 0..2999 of layers 0-2 stored: a lookup that spans several lock
  // rounds still finds the exact prefix and every tier.
  for (uint64_t first = 0; first < 3000; first += 8) {
    std::vector<PageKey> keys;
    for (uint64_t i = first; i < std::min<uint64_t>(first + 8, 3000); ++i) {
      for (uint32_t l = 0; l < 3; ++l) keys.push_back(Key(100 + i, l));
    }
    for (size_t k = 0; k < keys.size(); k += 8) {
      std::vector<PageKey> batch(keys.begin() + k, keys.begin() + std::min(keys.size(), k + 8));
      ASSERT_TRUE(PutPages(*store_, batch).ok());
    }
  }
  auto found = store_->Lookup(0, chain, 0, 3);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->prefix_pages, 3000u);
  ASSERT_EQ(found->tiers.size(), 3u * 8192);
  EXPECT_EQ(found->tiers[3 * 2999 + 2], Tier::kRam);
  EXPECT_EQ(found->tiers[3 * 3000], Tier::kNone);
  EXPECT_EQ(store_->Stats().lookups, 1u);
}

TEST_F(StoreTest, InvalidBatchesStoreNothing) {
  auto code = [&](std::vector<PutSpec> specs, std::vector<std::vector<uint8_t>> data) {
    std::vector<absl::Span<const uint8_t>> spans(data.begin(), data.end());
    return store_->BatchPut(specs, spans).status().code();
  };
  const auto kBad = absl::StatusCode::kInvalidArgument;
  const auto b1 = PageBytes(Key(1), SmallLayout());
  const auto b2 = PageBytes(Key(2), SmallLayout());
  // A key twice.
  EXPECT_EQ(code({Spec(Key(1)), Spec(Key(2)), Spec(Key(1))}, {b1, b2, b1}), kBad);
  // A bad layout.
  PutSpec bad_layout = Spec(Key(2));
  bad_layout.layout.head_dim = 0;
  EXPECT_EQ(code({Spec(Key(1)), bad_layout}, {b1, b2}), kBad);
  // A byte count that does not match the layout.
  EXPECT_EQ(code({Spec(Key(1)), Spec(Key(2))}, {b1, std::vector<uint8_t>(b2.begin(), b2.end() - 1)}),
            kBad);
  // Specs and buffers of different counts, empty and oversized batches.
  EXPECT_EQ(code({Spec(Key(1)), Spec(Key(2))}, {b1}), kBad);
  EXPECT_EQ(code({}, {}), kBad);
  std::vector<PutSpec> nine;
  std::vector<std::vector<uint8_t>> nine_data;
  for (uint64_t n = 10; n < 19; ++n) {
    nine.push_back(Spec(Key(n)));
    nine_data.push_back(PageBytes(Key(n), SmallLayout()));
  }
  EXPECT_EQ(code(nine, nine_data), kBad);
  // Reserve checks the same without data.
  EXPECT_EQ(store_->Reserve({Spec(Key(1)), Spec(Key(1))}).status().code(), kBad);

  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.put_pages, 0u);
  EXPECT_EQ(stats.ram.pages, 0u);
  EXPECT_EQ(stats.ram.used_bytes, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(GetOne(Key(1)).status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->BatchGet({}).status().code(), kBad);
}

TEST_F(StoreTest, ChecksumMismatchIsDataLossAndStoresNothing) {
  PutSpec wrong = Spec(Key(2));
  wrong.checksum ^= 1;
  const auto b1 = PageBytes(Key(1), SmallLayout());
  const auto b2 = PageBytes(Key(2), SmallLayout());
  std::vector<absl::Span<const uint8_t>> spans = {b1, b2};
  EXPECT_EQ(store_->BatchPut({Spec(Key(1)), wrong}, spans).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(GetOne(Key(1)).status.code(), absl::StatusCode::kNotFound);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.put_pages, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.ram.used_bytes, 0u);
}

TEST_F(StoreTest, ReservedPagesAreInvisibleUntilCommit) {
  auto r = store_->Reserve({Spec(Key(1)), Spec(Key(2))});
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const auto bytes = PageBytes(r->spec(i).key, SmallLayout());
    ASSERT_EQ(r->buffer(i).size(), bytes.size());
    std::copy(bytes.begin(), bytes.end(), r->buffer(i).begin());
  }
  EXPECT_EQ(store_->Stats().reserved_bytes, 2u * 4096);
  EXPECT_EQ(GetOne(Key(1)).status.code(), absl::StatusCode::kNotFound);
  auto lookup = store_->Lookup(0, {Key(1).hash}, 0, 1);
  EXPECT_EQ(lookup->tiers[0], Tier::kNone);
  auto committed = store_->Commit(*std::move(r));
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(GetOne(Key(1)).data, AsString(PageBytes(Key(1), SmallLayout())));

  // A stored key gets no buffer.
  auto dup = store_->Reserve({Spec(Key(1)), Spec(Key(3))});
  ASSERT_TRUE(dup.ok());
  EXPECT_TRUE(dup->buffer(0).empty());
  EXPECT_EQ(dup->buffer(1).size(), 4096u);
  store_->Abort(*std::move(dup));
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(GetOne(Key(3)).status.code(), absl::StatusCode::kNotFound);

  {
    auto dropped = store_->Reserve({Spec(Key(4))});
    ASSERT_TRUE(dropped.ok());
    EXPECT_EQ(store_->Stats().reserved_bytes, 4096u);
  }  // destroyed uncommitted: aborted
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.ram.used_bytes, 2u * 4096);
  EXPECT_EQ(stats.put_pages, 2u);

  // A moved-from or default reservation cannot be committed.
  EXPECT_EQ(store_->Commit(Reservation()).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// A page found stored at Reserve gets no buffer; if it is gone by Commit,
// reporting it present would acknowledge a page the store does not hold.
TEST_F(StoreTest, CommitOfAPageRemovedSinceReserveIsAbortedAndStoresNothing) {
  ASSERT_TRUE(PutPages(*store_, {Key(1)}).ok());
  auto r = store_->Reserve({Spec(Key(1)), Spec(Key(2))});
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->buffer(0).empty());
  const auto bytes = PageBytes(Key(2), SmallLayout());
  std::copy(bytes.begin(), bytes.end(), r->buffer(1).begin());
  ASSERT_EQ(*store_->Delete({Key(1)}, /*force=*/false), 1u);
  EXPECT_EQ(store_->Commit(*std::move(r)).status().code(), absl::StatusCode::kAborted);
  EXPECT_EQ(GetOne(Key(1)).status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetOne(Key(2)).status.code(), absl::StatusCode::kNotFound);
  const StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.put_pages, 1u);
  EXPECT_EQ(stats.put_duplicate_pages, 0u);
  EXPECT_EQ(stats.ram.used_bytes, 0u);

  // Put again, the pages are written and stored.
  auto again = PutPages(*store_, {Key(1), Key(2)});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_FALSE((*again)[0].already_present);
  EXPECT_EQ(GetOne(Key(1)).data, AsString(PageBytes(Key(1), SmallLayout())));
  EXPECT_EQ(GetOne(Key(2)).data, AsString(bytes));
}

// Slots a writer the store cannot stop may still be writing stay out of use
// for the reservation's release delay, whichever way it ended.
TEST_F(StoreTest, SlotsOfEndedReservationsWaitOutTheirReleaseDelay) {
  EXPECT_EQ(store_->Reserve({Spec(Key(1))}, {.release_delay = absl::Seconds(-1)}).status().code(),
            absl::StatusCode::kInvalidArgument);
  const ReserveOptions late{.release_delay = absl::Seconds(5)};
  auto aborted = store_->Reserve({Spec(Key(1))}, late);
  ASSERT_TRUE(aborted.ok());
  uint8_t* const first = aborted->buffer(0).data();
  store_->Abort(*std::move(aborted));
  // A commit that fails its checksum ends the same way.
  auto failed = store_->Reserve({Spec(Key(2))}, late);
  ASSERT_TRUE(failed.ok());
  uint8_t* const second = failed->buffer(0).data();
  EXPECT_NE(second, first);
  std::fill(failed->buffer(0).begin(), failed->buffer(0).end(), 0x5a);
  EXPECT_EQ(store_->Commit(*std::move(failed)).status().code(), absl::StatusCode::kDataLoss);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.quarantined_bytes, 2u * 4096);
  // Meanwhile no other put gets those slots.
  std::vector<PageKey> keys;
  for (uint64_t i = 10; i < 10 + 200; ++i) keys.push_back(Key(i));
  for (size_t k = 0; k < keys.size(); k += 8) {
    const std::vector<PageKey> batch(keys.begin() + k, keys.begin() + k + 8);
    auto r = store_->Reserve([&] {
      std::vector<PutSpec> specs;
      for (const PageKey& key : batch) specs.push_back(Spec(key));
      return specs;
    }());
    ASSERT_TRUE(r.ok()) << r.status();
    for (size_t i = 0; i < r->size(); ++i) {
      EXPECT_NE(r->buffer(i).data(), first);
      EXPECT_NE(r->buffer(i).data(), second);
    }
  }
  clock_.AdvanceMillis(5000);
  // No put needed: an idle store reports (and frees) what is due.
  stats = store_->Stats();
  EXPECT_EQ(stats.quarantined_bytes, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
}

// A commit refused because a page went away after Reserve comes after the
// caller's last write: its slots go straight back, not into quarantine
// (under churn, such commits kept most of the RAM tier quarantined).
TEST_F(StoreTest, AbortedCommitFreesItsSlotsAtOnce) {
  ASSERT_TRUE(PutPages(*store_, {Key(1)}).ok());
  const ReserveOptions late{.release_delay = absl::Seconds(5)};
  auto r = store_->Reserve({Spec(Key(1)), Spec(Key(2))}, late);
  ASSERT_TRUE(r.ok());
  const auto bytes = PageBytes(Key(2), SmallLayout());
  std::copy(bytes.begin(), bytes.end(), r->buffer(1).begin());
  ASSERT_EQ(*store_->Delete({Key(1)}, /*force=*/false), 1u);
  EXPECT_EQ(store_->Commit(*std::move(r)).status().code(), absl::StatusCode::kAborted);
  const StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.quarantined_bytes, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.ram.used_bytes, 0u);
}

TEST_F(StoreTest, ReservationOfAnotherStoreIsRefused) {
  TempDir other_dir;
  StoreOptions other_options = options_;
  other_options.data_dir = other_dir.path();
  auto other = *Store::Open(other_options);
  auto r = other->Reserve({Spec(Key(1))});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(other->Stats().reserved_bytes, 4096u);
  EXPECT_EQ(store_->Commit(*std::move(r)).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Refused and destroyed: its own store aborted it.
  EXPECT_EQ(other->Stats().reserved_bytes, 0u);
  EXPECT_EQ(store_->Stats().put_pages, 0u);
}

TEST_F(StoreTest, PinsExpireWithTheClock) {
  ASSERT_TRUE(PutPages(*store_, {Key(1), Key(2)}).ok());
  EXPECT_EQ(store_->Pin(0, {Key(1)}, 0, PinId{}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Pin(0, {Key(1)}, 10'001, PinId{}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Pin(0, {Key(1), Key(9)}, 100, PinId{}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Pin(0, {Key(1)}, 100, PinId{.hi = 0, .lo = 12345}).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stats().active_pins, 0u);
  EXPECT_EQ(store_->Stats().ram.pinned_pages, 0u);

  auto pin = store_->Pin(0, {Key(1)}, 100, PinId{});
  ASSERT_TRUE(pin.ok());
  EXPECT_EQ(store_->Stats().ram.pinned_pages, 1u);
  clock_.AdvanceMillis(60);
  // Extending restarts the TTL and adds keys.
  EXPECT_EQ(store_->Pin(0, {Key(2)}, 100, *pin).value(), *pin);
  EXPECT_EQ(store_->Stats().ram.pinned_pages, 2u);
  clock_.AdvanceMillis(99);
  EXPECT_EQ(store_->Delete({Key(1)}, false).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Stats().active_pins, 1u);
  clock_.AdvanceMillis(1);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.active_pins, 0u);
  EXPECT_EQ(stats.ram.pinned_pages, 0u);
  EXPECT_EQ(store_->Unpin(0, *pin).code(), absl::StatusCode::kNotFound);
  stats = store_->Stats();
  EXPECT_EQ(stats.active_pins, 0u);
  EXPECT_EQ(stats.ram.pinned_pages, 0u);
  EXPECT_EQ(store_->Delete({Key(1)}, false).value(), 1u);
}

TEST_F(StoreTest, UnpinReleasesAndUnknownIsNotFound) {
  ASSERT_TRUE(PutPages(*store_, {Key(1)}).ok());
  EXPECT_EQ(store_->Unpin(0, PinId{.hi = 0, .lo = 77}).code(), absl::StatusCode::kNotFound);
  auto a = store_->Pin(0, {Key(1)}, 1000, PinId{});
  auto b = store_->Pin(0, {Key(1)}, 1000, PinId{});
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_TRUE(store_->Unpin(0, *a).ok());
  EXPECT_EQ(store_->Unpin(0, *a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stats().ram.pinned_pages, 1u);  // still under b
  EXPECT_TRUE(store_->Unpin(0, *b).ok());
  EXPECT_EQ(store_->Stats().ram.pinned_pages, 0u);
}

TEST(StorePinLimitTest, MaxPinsBoundsLivePins) {
  TempDir dir;
  FakeClock clock;
  StoreOptions options;
  options.data_dir = dir.path();
  options.ram.capacity_bytes = 1 << 20;
  options.max_pins = 2;
  options.clock = &clock;
  auto store = *Store::Open(options);
  ASSERT_TRUE(PutPages(*store, {Key(1)}).ok());
  auto a = store->Pin(0, {Key(1)}, 100, PinId{});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(store->Pin(0, {Key(1)}, 200, PinId{}).ok());
  EXPECT_EQ(store->Pin(0, {Key(1)}, 100, PinId{}).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(store->Pin(0, {}, 100, *a).ok());  // extending is not a new pin
  clock.AdvanceMillis(150);                   // the first pin expires
  EXPECT_TRUE(store->Pin(0, {Key(1)}, 100, PinId{}).ok());
}

TEST_F(StoreTest, DeletePinnedNeedsForce) {
  ASSERT_TRUE(PutPages(*store_, {Key(1), Key(2), Key(3)}).ok());
  auto pin = store_->Pin(0, {Key(2)}, 1000, PinId{});
  ASSERT_TRUE(pin.ok());
  EXPECT_EQ(store_->Delete({Key(1), Key(2)}, false).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(GetOne(Key(1)).status.ok());
  EXPECT_TRUE(GetOne(Key(2)).status.ok());
  EXPECT_EQ(store_->Delete({Key(1), Key(2), Key(7), Key(1)}, true).value(), 2u);
  EXPECT_EQ(GetOne(Key(1)).status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(GetOne(Key(2)).status.code(), absl::StatusCode::kNotFound);
  StoreStats stats = store_->Stats();
  EXPECT_EQ(stats.ram.pages, 1u);
  EXPECT_EQ(stats.ram.used_bytes, 4096u);
  EXPECT_EQ(stats.ram.pinned_pages, 0u);
  // The pin lives on, without the deleted key; a re-put key is not pinned.
  ASSERT_TRUE(PutPages(*store_, {Key(2)}).ok());
  EXPECT_EQ(store_->Delete({Key(2)}, false).value(), 1u);
  EXPECT_TRUE(store_->Unpin(0, *pin).ok());
  std::vector<PageKey> nine(9, Key(3));
  EXPECT_EQ(store_->Delete(nine, false).status().code(), absl::StatusCode::kInvalidArgument);
}

// Several threads put overlapping key ranges and read them back while RAM
// is small enough that pages keep moving to disk.
TEST(StoreConcurrencyTest, ConcurrentPutsAndGetsStayConsistent) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.path();
  options.ram.capacity_bytes = 64 * 4096;
  options.ram.policy = "s3fifo";
  options.disk.capacity_bytes = 4096 * 4096;
  options.promote_after_reads = 1;
  auto store = *Store::Open(options);
  constexpr int kThreads = 4;
  constexpr uint64_t kPerThread = 200, kStride = 100;
  std::vector<std::thread> threads;
  std::atomic<int> bad_reads{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t n = t * kStride; n < t * kStride + kPerThread; n += 2) {
        if (!PutPages(*store, {Key(n), Key(n + 1)}).ok()) ++bad_reads;
        auto got = store->BatchGet({Key(n), Key(n + 1), Key(n / 2)});
        if (!got.ok()) {
          ++bad_reads;
          continue;
        }
        for (int i = 0; i < 2; ++i) {
          const PageKey key = Key(n + i);
          if (!(*got)[i].status.ok() || (*got)[i].data != AsString(PageBytes(key, SmallLayout()))) {
            ++bad_reads;
          }
        }
        const GetResult& other = (*got)[2];
        if (other.status.ok() && other.data != AsString(PageBytes(Key(n / 2), SmallLayout()))) {
          ++bad_reads;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(bad_reads.load(), 0);
  const uint64_t unique = kStride * (kThreads - 1) + kPerThread;
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.put_pages, unique);
  EXPECT_EQ(stats.put_duplicate_pages, kThreads * kPerThread - unique);
  EXPECT_EQ(stats.lost_pages, 0u);
  EXPECT_EQ(stats.dropped_pages, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_GT(stats.demotions, 0u);
  // No slot or disk byte leaked.
  EXPECT_EQ(stats.ram.used_bytes, stats.ram.pages * 4096);
  EXPECT_EQ(stats.disk.used_bytes, stats.disk.pages * 4096);
  std::vector<Hash128> chain;
  for (uint64_t n = 0; n < unique; ++n) chain.push_back(Key(n).hash);
  auto lookup = store->Lookup(0, chain, 0, 1);
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_pages, unique);
  for (uint64_t n = 0; n < unique; n += 37) {
    auto got = store->BatchGet({Key(n)});
    ASSERT_TRUE((*got)[0].status.ok()) << n;
    EXPECT_EQ((*got)[0].data, AsString(PageBytes(Key(n), SmallLayout())));
  }
}

// Puts, reads, deletes and pins race over a small key space; afterwards
// every byte is accounted for and every page read was intact.
TEST(StoreConcurrencyTest, DeletesAndPinsRacingReadsLeakNothing) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.path();
  options.ram.capacity_bytes = 16 * 4096;
  options.disk.capacity_bytes = 24 * 4096;
  options.promote_after_reads = 1;
  auto store = *Store::Open(options);
  constexpr int kThreads = 4;
  constexpr uint64_t kKeys = 48;
  std::atomic<int> bad_reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      uint64_t x = 88172645463325252ull + t;
      for (int i = 0; i < 400; ++i) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        const PageKey key = Key(x % kKeys);
        switch ((x >> 20) % 4) {
          case 0: {
            absl::Status s = PutPages(*store, {key}).status();
            if (!s.ok() && !absl::IsResourceExhausted(s)) ++bad_reads;
            break;
          }
          case 1: {
            auto got = store->BatchGet({key, Key((x >> 8) % kKeys)});
            for (size_t k = 0; got.ok() && k < got->size(); ++k) {
              const GetResult& r = (*got)[k];
              const PageKey asked = k == 0 ? key : Key((x >> 8) % kKeys);
              if (r.status.ok() && r.data != AsString(PageBytes(asked, SmallLayout()))) ++bad_reads;
              if (absl::IsDataLoss(r.status)) ++bad_reads;
            }
            break;
          }
          case 2:
            if (!store->Delete({key}, (x >> 30) % 2 == 0).ok() &&
                (x >> 30) % 2 == 0) {
              ++bad_reads;
            }
            break;
          default: {
            auto pin = store->Pin(0, {key}, 1000, PinId{});
            if (pin.ok() && (x >> 40) % 2 == 0) (void)store->Unpin(0, *pin);
            break;
          }
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(bad_reads.load(), 0);
  StoreStats stats = store->Stats();
  EXPECT_EQ(stats.lost_pages, 0u);
  EXPECT_EQ(stats.reserved_bytes, 0u);
  EXPECT_EQ(stats.ram.used_bytes, stats.ram.pages * 4096);
  EXPECT_EQ(stats.disk.used_bytes, stats.disk.pages * 4096);
  EXPECT_LE(stats.ram.used_bytes, options.ram.capacity_bytes);
  EXPECT_LE(stats.disk.used_bytes, options.disk.capacity_bytes);
  // Every page the index holds can be read back intact.
  for (uint64_t n = 0; n < kKeys; ++n) {
    GetResult r = (*store->BatchGet({Key(n)}))[0];
    if (r.status.ok()) {
      EXPECT_EQ(r.data, AsString(PageBytes(Key(n), SmallLayout())));
    } else {
      EXPECT_EQ(r.status.code(), absl::StatusCode::kNotFound);
    }
  }
}

}  // namespace
}  // namespace kvtier::store
