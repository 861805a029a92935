// The cache event log alone, and the events a TieredStore appends to it.
#include "kvstore/core/cache_events.h"

#include <gtest/gtest.h>

#include <thread>

#include "absl/container/flat_hash_set.h"
#include "kvstore/core/store.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::Key;
using testing::PutPages;
using testing::TempDir;
using Kind = CacheEvent::Kind;

constexpr uint64_t kPage = 4096;

PageKey TenantKey(uint64_t tenant, uint64_t n, uint32_t layer = 0) {
  PageKey key = Key(n, layer);
  key.tenant = tenant;
  return key;
}

std::vector<std::pair<Kind, PageKey>> KindsAndKeys(const CacheEventLog::Slice& slice) {
  std::vector<std::pair<Kind, PageKey>> out;
  for (const CacheEvent& e : slice.events) out.emplace_back(e.kind, e.key);
  return out;
}

TEST(CacheEventLogTest, NumbersEventsFromOneAndFiltersByTenantAndLayer) {
  CacheEventLog log(16);
  EXPECT_NE(log.epoch(), 0u);
  EXPECT_NE(log.epoch(), CacheEventLog(16).epoch());
  EXPECT_EQ(log.next_seq(), 1u);
  EXPECT_EQ(log.oldest_seq(), 1u);
  log.Append(Kind::kStored, TenantKey(7, 1, 0));
  log.Append(Kind::kStored, TenantKey(8, 1, 0));
  log.AppendAll(Kind::kStored, {TenantKey(7, 2, 0), TenantKey(7, 2, 1)});
  log.Append(Kind::kRemoved, TenantKey(7, 1, 0));
  EXPECT_EQ(log.next_seq(), 6u);

  CacheEventLog::Slice all7 = log.Read(1, 7, std::nullopt, 100);
  ASSERT_FALSE(all7.lost);
  EXPECT_EQ(all7.next_seq, 6u);
  ASSERT_EQ(all7.events.size(), 4u);
  EXPECT_EQ(all7.events[0], (CacheEvent{.seq = 1, .kind = Kind::kStored, .key = TenantKey(7, 1)}));
  EXPECT_EQ(all7.events[1].seq, 3u);
  EXPECT_EQ(all7.events[2].seq, 4u);
  EXPECT_EQ(all7.events[3], (CacheEvent{.seq = 5, .kind = Kind::kRemoved, .key = TenantKey(7, 1)}));

  CacheEventLog::Slice layer1 = log.Read(1, 7, 1u, 100);
  ASSERT_EQ(layer1.events.size(), 1u);
  EXPECT_EQ(layer1.events[0].key, TenantKey(7, 2, 1));

  // Tenant 8 sees only its own; tenant 9 none, yet its cursor moves on.
  EXPECT_EQ(KindsAndKeys(log.Read(1, 8, std::nullopt, 100)),
            (std::vector<std::pair<Kind, PageKey>>{{Kind::kStored, TenantKey(8, 1)}}));
  CacheEventLog::Slice none = log.Read(1, 9, std::nullopt, 100);
  EXPECT_TRUE(none.events.empty());
  EXPECT_EQ(none.next_seq, 6u);
  // A read at the end is empty, not lost.
  CacheEventLog::Slice end = log.Read(6, 7, std::nullopt, 100);
  EXPECT_FALSE(end.lost);
  EXPECT_TRUE(end.events.empty());
  EXPECT_EQ(end.next_seq, 6u);
}

TEST(CacheEventLogTest, ReadStopsAtMaxEventsAndMaxScan) {
  CacheEventLog log(64);
  for (uint64_t n = 1; n <= 10; ++n) log.Append(Kind::kStored, TenantKey(n % 2, n));
  CacheEventLog::Slice three = log.Read(1, 0, std::nullopt, 3);
  ASSERT_EQ(three.events.size(), 3u);
  EXPECT_EQ(three.events[2].seq, 6u);  // events 2, 4, 6 are tenant 0's
  EXPECT_EQ(three.next_seq, 7u);
  CacheEventLog::Slice scanned = log.Read(1, 0, std::nullopt, 100, /*max_scan=*/3);
  ASSERT_EQ(scanned.events.size(), 1u);
  EXPECT_EQ(scanned.events[0].seq, 2u);
  EXPECT_EQ(scanned.next_seq, 4u);
}

TEST(CacheEventLogTest, OverwrittenOrFutureCursorsAreLost) {
  CacheEventLog log(4);
  for (uint64_t n = 1; n <= 10; ++n) log.Append(Kind::kStored, Key(n));
  EXPECT_EQ(log.next_seq(), 11u);
  EXPECT_EQ(log.oldest_seq(), 7u);
  EXPECT_TRUE(log.Read(0, 0, std::nullopt, 10).lost);
  EXPECT_TRUE(log.Read(6, 0, std::nullopt, 10).lost);
  EXPECT_TRUE(log.Read(12, 0, std::nullopt, 10).lost);
  CacheEventLog::Slice kept = log.Read(7, 0, std::nullopt, 10);
  ASSERT_FALSE(kept.lost);
  ASSERT_EQ(kept.events.size(), 4u);
  EXPECT_EQ(kept.events[0].key, Key(7));
  EXPECT_EQ(kept.events[3].key, Key(10));
}

TEST(CacheEventLogTest, ConcurrentAppendsGetEveryNumberOnce) {
  CacheEventLog log(1 << 16);
  std::vector<std::thread> threads;
  for (uint64_t t = 0; t < 4; ++t) {
    threads.emplace_back([&log, t] {
      for (uint64_t n = 0; n < 1000; ++n) log.Append(Kind::kStored, TenantKey(1, t * 1000 + n));
    });
  }
  for (auto& thread : threads) thread.join();
  CacheEventLog::Slice slice = log.Read(1, 1, std::nullopt, 1 << 16);
  ASSERT_EQ(slice.events.size(), 4000u);
  absl::flat_hash_set<uint64_t> seen;
  for (size_t i = 0; i < slice.events.size(); ++i) {
    EXPECT_EQ(slice.events[i].seq, i + 1);
    seen.insert(slice.events[i].key.hash.lo);
  }
  EXPECT_EQ(seen.size(), 4000u);
}

class StoreEventsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.data_dir = dir_.path();
    // RAM 4 pages (high 3, low 2); disk 4 pages (high 3, low 2).
    options_.ram = {.capacity_bytes = 4 * kPage, .high_watermark = 0.75, .low_watermark = 0.5};
    options_.disk = {.capacity_bytes = 4 * kPage, .high_watermark = 0.75, .low_watermark = 0.5};
    options_.events = &log_;
    store_ = *Store::Open(options_);
  }

  // Every event since `from`, of tenant 0.
  std::vector<std::pair<Kind, PageKey>> Since(uint64_t from) {
    CacheEventLog::Slice slice = log_.Read(from, 0, std::nullopt, 1000);
    EXPECT_FALSE(slice.lost);
    return KindsAndKeys(slice);
  }

  TempDir dir_;
  CacheEventLog log_{1024};
  StoreOptions options_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreEventsTest, PutsAndDeletesAreEventsDuplicatesAndMissesAreNot) {
  ASSERT_TRUE(PutPages(*store_, {Key(1), Key(2)}).ok());
  ASSERT_TRUE(PutPages(*store_, {Key(1)}).ok());  // duplicate
  EXPECT_EQ(Since(1), (std::vector<std::pair<Kind, PageKey>>{{Kind::kStored, Key(1)},
                                                              {Kind::kStored, Key(2)}}));
  const uint64_t mark = log_.next_seq();
  ASSERT_EQ(*store_->Delete({Key(2), Key(9)}, /*force=*/false), 1u);
  EXPECT_EQ(Since(mark), (std::vector<std::pair<Kind, PageKey>>{{Kind::kRemoved, Key(2)}}));
  // A pinned page refused deletion is still held: no event.
  ASSERT_TRUE(store_->Pin(0, {Key(1)}, 60'000, PinId{}).ok());
  EXPECT_FALSE(store_->Delete({Key(1)}, /*force=*/false).ok());
  EXPECT_EQ(log_.next_seq(), mark + 1);
}

// Demotion keeps a page on the node (no event); a page dropped from the
// disk tier is removed.
TEST_F(StoreEventsTest, TierMovesAreNoEventsDropsAre) {
  for (uint64_t n = 1; n <= 4; ++n) ASSERT_TRUE(PutPages(*store_, {Key(n)}).ok());
  ASSERT_GT(store_->Stats().demotions, 0u);
  EXPECT_EQ(log_.next_seq(), 5u);  // four stored events, nothing else
  for (uint64_t n = 5; n <= 6; ++n) ASSERT_TRUE(PutPages(*store_, {Key(n)}).ok());
  const StoreStats stats = store_->Stats();
  ASSERT_GT(stats.dropped_pages, 0u);
  std::vector<PageKey> stored;
  std::vector<PageKey> removed;
  for (const auto& [kind, key] : Since(1)) {
    (kind == Kind::kStored ? stored : removed).push_back(key);
  }
  EXPECT_EQ(stored.size(), 6u);
  EXPECT_EQ(removed.size(), stats.dropped_pages);
  for (const PageKey& key : removed) {
    EXPECT_EQ((*store_->BatchGet({key}))[0].status.code(), absl::StatusCode::kNotFound);
  }
  // Every page without a removal is still held.
  absl::flat_hash_set<PageKey> held;
  for (const HeldPage& page : store_->HeldPages(false)) held.insert(page.key);
  EXPECT_EQ(held.size(), 6u - removed.size());
}

// The snapshot rule of cache_events.h: next_seq, then the pages held, then
// the events from that number on give exactly the pages held at the end.
TEST_F(StoreEventsTest, SnapshotThenReplayEqualsWhatTheStoreHolds) {
  options_.ram.capacity_bytes = 64 * kPage;
  options_.disk.capacity_bytes = 64 * kPage;
  store_.reset();
  store_ = *Store::Open(options_);
  for (uint64_t n = 1; n <= 20; ++n) ASSERT_TRUE(PutPages(*store_, {Key(n)}).ok());
  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (uint64_t n = 21; n <= 200; ++n) {
      ASSERT_TRUE(PutPages(*store_, {Key(n)}).ok());
      ASSERT_TRUE(store_->Delete({Key(n - 15)}, /*force=*/false).ok());
    }
    done = true;
  });
  const uint64_t from = log_.next_seq();
  absl::flat_hash_set<PageKey> view;
  for (const HeldPage& page : store_->HeldPages(/*pinned_only=*/false)) view.insert(page.key);
  writer.join();
  for (const auto& [kind, key] : Since(from)) {
    if (kind == Kind::kStored) {
      view.insert(key);
    } else {
      view.erase(key);
    }
  }
  absl::flat_hash_set<PageKey> held;
  for (const HeldPage& page : store_->HeldPages(false)) held.insert(page.key);
  EXPECT_TRUE(done);
  EXPECT_EQ(held.size(), 20u);  // 1..5 and 186..200
  EXPECT_EQ(view, held);
}

}  // namespace
}  // namespace kvtier::store
