#include "kvstore/eviction/eviction_policy.h"

#include <gtest/gtest.h>

#include "absl/container/flat_hash_set.h"
#include "kvstore/eviction/lru_policy.h"
#include "kvstore/eviction/s3fifo_policy.h"

namespace kvtier::store {
namespace {

PageKey K(uint64_t n) { return PageKey{.hash = {.hi = 0, .lo = n}, .layer = 0}; }

bool NoSkip(const PageKey&) { return false; }

// Sends `key` through S and the ghost into M. REQUIRES: S is empty.
void ToMain(S3FifoPolicy& p, const PageKey& key) {
  p.OnInsert(key);
  ASSERT_EQ(p.Evict(NoSkip), key);
  ASSERT_TRUE(p.InGhost(key));
  p.OnInsert(key);
  ASSERT_FALSE(p.InGhost(key));
}

TEST(EvictionPolicyFactoryTest, KnowsLruAndS3Fifo) {
  EXPECT_NE(dynamic_cast<LruPolicy*>(MakeEvictionPolicy("lru")->get()), nullptr);
  EXPECT_NE(dynamic_cast<S3FifoPolicy*>(MakeEvictionPolicy("s3fifo")->get()), nullptr);
  EXPECT_EQ(MakeEvictionPolicy("clock").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(IsKnownEvictionPolicy("lru"));
  EXPECT_FALSE(IsKnownEvictionPolicy("LRU"));
}

TEST(LruPolicyTest, EvictsLeastRecentlyUsedFirst) {
  LruPolicy lru;
  for (uint64_t n = 1; n <= 4; ++n) lru.OnInsert(K(n));
  lru.OnAccess(K(1));  // order, oldest first: 2 3 4 1
  EXPECT_EQ(lru.Evict(NoSkip), K(2));
  EXPECT_EQ(lru.Evict(NoSkip), K(3));
  lru.OnAccess(K(4));  // 1 4
  EXPECT_EQ(lru.Evict(NoSkip), K(1));
  EXPECT_EQ(lru.Evict(NoSkip), K(4));
  EXPECT_EQ(lru.Evict(NoSkip), std::nullopt);
  EXPECT_EQ(lru.size(), 0u);
}

TEST(LruPolicyTest, SkippedKeysStayInPlace) {
  LruPolicy lru;
  for (uint64_t n = 1; n <= 3; ++n) lru.OnInsert(K(n));
  auto skip1 = [](const PageKey& k) { return k == K(1); };
  EXPECT_EQ(lru.Evict(skip1), K(2));
  auto skip_all = [](const PageKey&) { return true; };
  EXPECT_EQ(lru.Evict(skip_all), std::nullopt);
  EXPECT_EQ(lru.size(), 2u);
  EXPECT_EQ(lru.Evict(NoSkip), K(1));
}

TEST(LruPolicyTest, RemoveAndUnknownKeys) {
  LruPolicy lru;
  lru.OnInsert(K(1));
  lru.OnInsert(K(2));
  lru.OnAccess(K(9));
  lru.OnRemove(K(9));
  lru.OnRemove(K(1));
  EXPECT_EQ(lru.size(), 1u);
  EXPECT_EQ(lru.Evict(NoSkip), K(2));
}

TEST(S3FifoPolicyTest, SmallQueueEvictsOnceSeenAndPromotesTwiceSeen) {
  S3FifoPolicy p;
  for (uint64_t n = 1; n <= 10; ++n) p.OnInsert(K(n));
  EXPECT_EQ(p.small_size(), 10u);
  p.OnAccess(K(1));
  p.OnAccess(K(1));  // freq 2 > 1: moves to M instead of leaving
  p.OnAccess(K(3));  // freq 1: not enough
  EXPECT_EQ(p.Evict(NoSkip), K(2));
  EXPECT_EQ(p.main_size(), 1u);
  EXPECT_TRUE(p.InGhost(K(2)));
  EXPECT_EQ(p.Evict(NoSkip), K(3));
  EXPECT_TRUE(p.InGhost(K(3)));
  EXPECT_EQ(p.size(), 8u);
}

TEST(S3FifoPolicyTest, GhostHitGoesToMain) {
  S3FifoPolicy p;
  for (uint64_t n = 1; n <= 3; ++n) p.OnInsert(K(n));
  EXPECT_EQ(p.Evict(NoSkip), K(1));
  ASSERT_TRUE(p.InGhost(K(1)));
  p.OnInsert(K(1));
  EXPECT_FALSE(p.InGhost(K(1)));
  EXPECT_EQ(p.main_size(), 1u);
  EXPECT_EQ(p.small_size(), 2u);
  // S (2, 3) is at or above its 10% share, so S is evicted first.
  EXPECT_EQ(p.Evict(NoSkip), K(2));
  EXPECT_EQ(p.Evict(NoSkip), K(3));
  EXPECT_EQ(p.Evict(NoSkip), K(1));
}

TEST(S3FifoPolicyTest, MainReinsertsWhileFrequencyRemains) {
  S3FifoPolicy p;
  ToMain(p, K(1));
  ToMain(p, K(2));  // M, head first: 2 1
  ASSERT_EQ(p.main_size(), 2u);
  p.OnAccess(K(1));
  p.OnAccess(K(1));  // freq 2: survives two passes
  EXPECT_EQ(p.Evict(NoSkip), K(2));
  EXPECT_EQ(p.Evict(NoSkip), K(1));
  EXPECT_EQ(p.size(), 0u);
}

TEST(S3FifoPolicyTest, FrequencyCapsAtThree) {
  S3FifoPolicy p;
  ToMain(p, K(1));
  ToMain(p, K(2));  // M: 2 1
  for (int i = 0; i < 10; ++i) p.OnAccess(K(1));  // capped at 3
  for (int i = 0; i < 4; ++i) p.OnAccess(K(2));   // capped at 3
  // Both rotate three times; then 1 (the older tail) goes first.
  EXPECT_EQ(p.Evict(NoSkip), K(1));
  EXPECT_EQ(p.Evict(NoSkip), K(2));
}

TEST(S3FifoPolicyTest, SkipFallsBackToMainAndAllSkippedIsNullopt) {
  S3FifoPolicy p;
  ToMain(p, K(1));
  p.OnInsert(K(2));  // S: 2
  auto skip2 = [](const PageKey& k) { return k == K(2); };
  EXPECT_EQ(p.Evict(skip2), K(1));
  auto skip_all = [](const PageKey&) { return true; };
  EXPECT_EQ(p.Evict(skip_all), std::nullopt);
  EXPECT_EQ(p.size(), 1u);
}

TEST(S3FifoPolicyTest, RemoveDoesNotEnterGhostAndGhostIsBounded) {
  S3FifoPolicy p;
  for (uint64_t n = 1; n <= 4; ++n) p.OnInsert(K(n));
  p.OnRemove(K(1));
  EXPECT_FALSE(p.InGhost(K(1)));
  EXPECT_EQ(p.Evict(NoSkip), K(2));
  EXPECT_EQ(p.Evict(NoSkip), K(3));
  // One page tracked: the ghost keeps at most one key.
  EXPECT_EQ(p.ghost_size(), 1u);
  EXPECT_TRUE(p.InGhost(K(3)));
}

}  // namespace
}  // namespace kvtier::store
