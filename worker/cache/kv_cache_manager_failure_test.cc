// KvCacheManager when the store fails it: down, hung, pages lost,
// damaged or stored first by another writer, backups that fail, a full
// transfer window.
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/cache/kv_cache_manager_testing.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker {
namespace {

using testing::Harness;
using testing::Inputs;
using testing::kDim;
using testing::kKvHeads;
using testing::kPage;
using testing::kQHeads;
using testing::kRow;
using testing::SmallArkvale;

// Prefills 24 tokens and appends 8 more to layer 0: 8 full pages, the
// first 6 backed up.
void FillEightPages(Harness& h, uint64_t seq, Inputs& in) {
  EXPECT_TRUE(h.Prefill(seq, 24, in).ok());
  EXPECT_TRUE(h.cache->ReapBackups(seq, true).ok());
  std::vector<float> k = in.Next(8 * kRow), v = in.Next(8 * kRow);
  EXPECT_TRUE(h.cache->AppendTokenIds(seq, std::vector<uint32_t>(8, 77)).ok());
  EXPECT_TRUE(h.cache->AppendKv(seq, 0, k.data(), v.data(), 8).ok());
}

// FillEightPages, then evicts pages 1, 4 and 5 of layer 0; returns the plan
// that recalls page 1.
PagePlan EvictPageOne(Harness& h, uint64_t seq, Inputs& in) {
  FillEightPages(h, seq, in);
  PagePlan drop;
  drop.resident = {0, 2, 3, 6, 7};
  EXPECT_TRUE(h.cache->ApplyPlan(seq, 0, drop).ok());
  EXPECT_FALSE(IsResident(h.cache->View(seq, 0)->states[1]));
  PagePlan plan;
  plan.resident = {0, 1, 2, 6, 7};
  plan.attend = plan.resident;
  return plan;
}
TEST(KvCacheManagerTest, StoreDownMakesRecallFailClearly) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  PagePlan plan = EvictPageOne(h, 3, in);
  h.store.SetMode(InProcessPageStore::Mode::kDown);
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  absl::Status s = h.cache->FinishRecalls(3, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(s.message().find("recall of 1 pages of sequence 3 layer 0 failed"),
            std::string::npos)
      << s;
  // Nothing half-installed: the page is evicted again and its slot free.
  EXPECT_EQ(h.cache->View(3, 0)->states[1], PageState::kEvicted);
  EXPECT_EQ(h.cache->pool(0).in_use(), 4u);
  // Once the store is back, the same plan succeeds.
  h.store.SetMode(InProcessPageStore::Mode::kUp);
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  EXPECT_TRUE(h.cache->FinishRecalls(3, 0).ok());
}

TEST(KvCacheManagerTest, HungStoreMakesRecallFailAtTheDeadline) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6, absl::Milliseconds(100));
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  PagePlan plan = EvictPageOne(h, 3, in);
  h.store.SetMode(InProcessPageStore::Mode::kHang);
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  EXPECT_EQ(h.cache->FinishRecalls(3, 0).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(h.cache->View(3, 0)->states[1], PageState::kEvicted);
  h.store.SetMode(InProcessPageStore::Mode::kUp);
}

// After EvictPageOne, the plan that recalls pages 1, 4 and 5.
PagePlan RecallThree() {
  PagePlan plan;
  plan.resident = {0, 1, 4, 5, 7};
  plan.attend = plan.resident;
  return plan;
}

TEST(KvCacheManagerTest, RecalledPagesReachThePoolInOneUploadWithTheirBytes) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  // The same inputs without evictions give the bytes each page must have.
  Harness kept(policy.get(), 1, 8);
  ASSERT_TRUE(kept.cache->AddSequence(3, {8}).ok());
  Inputs kept_in(4);
  FillEightPages(kept, 3, kept_in);

  Harness h(policy.get(), 1, 6);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  EvictPageOne(h, 3, in);
  const int uploads = h.device.uploads;
  const size_t ranges = h.device.ranges_uploaded;
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, RecallThree()).ok());
  ASSERT_TRUE(h.cache->FinishRecalls(3, 0).ok());
  EXPECT_EQ(h.device.uploads - uploads, 1);
  EXPECT_EQ(h.device.ranges_uploaded - ranges, 3u);
  for (uint32_t p : {1u, 4u, 5u}) {
    EXPECT_EQ(h.cache->View(3, 0)->states[p], PageState::kResident) << p;
    EXPECT_EQ(*h.cache->ResidentPageBytes(3, 0, p), *kept.cache->ResidentPageBytes(3, 0, p))
        << p;
  }
  EXPECT_EQ(h.cache->counters().pages_recalled, 3u);
}

TEST(KvCacheManagerTest, AFailedUploadLosesItsPagesAndSaysSo) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  EvictPageOne(h, 3, in);
  h.device.fail_uploads = true;
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, RecallThree()).ok());
  absl::Status s = h.cache->FinishRecalls(3, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_NE(s.message().find("did not reach the pool"), std::string::npos) << s;
  for (uint32_t p : {1u, 4u, 5u}) {
    EXPECT_EQ(h.cache->View(3, 0)->states[p], PageState::kLost) << p;
  }
  // Their slots are free again: only the kept pages 0 and 7 hold theirs.
  EXPECT_EQ(h.cache->pool(0).in_use(), 2u);
  EXPECT_EQ(h.cache->counters().pages_recalled, 0u);
}

TEST(KvCacheManagerTest, LostPageIsAnErrorWithoutRecomputer) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  PagePlan plan = EvictPageOne(h, 3, in);
  ASSERT_TRUE(h.store.MarkLost(*h.cache->KeyOf(3, 0, 1)).ok());
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  absl::Status s = h.cache->FinishRecalls(3, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(h.cache->View(3, 0)->states[1], PageState::kLost);
  // A plan may not ask for a lost page again.
  EXPECT_EQ(h.cache->ApplyPlan(3, 0, plan).code(), absl::StatusCode::kDataLoss);
}

TEST(KvCacheManagerTest, LostPageIsRecomputedAndVerified) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  // Keep the original bytes as the "model" would recompute them.
  ASSERT_TRUE(h.Prefill(3, 8, in).ok());
  const std::string page1 = *h.cache->ResidentPageBytes(3, 0, 1);
  Inputs rest(5);
  std::vector<float> k = rest.Next(24 * kRow), v = rest.Next(24 * kRow);
  ASSERT_TRUE(h.cache->AppendTokenIds(3, std::vector<uint32_t>(24, 9)).ok());
  ASSERT_TRUE(h.cache->AppendKv(3, 0, k.data(), v.data(), 24).ok());
  ASSERT_TRUE(h.cache->ReapBackups(3, true).ok());
  PagePlan drop;
  drop.resident = {0, 2, 3, 6, 7};
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, drop).ok());
  ASSERT_EQ(h.cache->View(3, 0)->states[1], PageState::kEvicted);
  int calls = 0;
  h.cache->set_recomputer([&](uint64_t seq, uint32_t layer, uint32_t page)
                              -> absl::StatusOr<std::string> {
    ++calls;
    EXPECT_EQ(seq, 3u);
    EXPECT_EQ(layer, 0u);
    EXPECT_EQ(page, 1u);
    return page1;
  });
  ASSERT_TRUE(h.store.MarkLost(*h.cache->KeyOf(3, 0, 1)).ok());
  PagePlan plan;
  plan.resident = {0, 1, 6, 7};
  plan.attend = plan.resident;
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  ASSERT_TRUE(h.cache->FinishRecalls(3, 0).ok());
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(h.cache->counters().pages_recomputed, 1u);
  EXPECT_EQ(*h.cache->ResidentPageBytes(3, 0, 1), page1);
}

TEST(KvCacheManagerTest, WrongRecomputedBytesAreRejected) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  PagePlan plan = EvictPageOne(h, 3, in);
  h.cache->set_recomputer([&](uint64_t, uint32_t, uint32_t) -> absl::StatusOr<std::string> {
    return std::string(h.cache->pool(0).page_bytes(), '\0');
  });
  ASSERT_TRUE(h.store.MarkLost(*h.cache->KeyOf(3, 0, 1)).ok());
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  EXPECT_EQ(h.cache->FinishRecalls(3, 0).code(), absl::StatusCode::kDataLoss);
}

TEST(KvCacheManagerTest, APageAnotherWriterStoredFirstIsServedAsStored) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6);
  // Another writer prefills the same tokens with other K/V (its kernels
  // round differently) and stores its pages first; the store keeps them.
  ASSERT_TRUE(h.cache->AddSequence(5, {6}).ok());
  Inputs other(11);
  ASSERT_TRUE(h.Prefill(5, 24, other).ok());
  ASSERT_TRUE(h.cache->ReapBackups(5, true).ok());
  const std::string theirs = *h.cache->ResidentPageBytes(5, 0, 1);
  const PageKey key = *h.cache->KeyOf(5, 0, 1);
  ASSERT_TRUE(h.cache->Cancel(5).ok());
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  PagePlan plan = EvictPageOne(h, 3, in);
  ASSERT_EQ(*h.cache->KeyOf(3, 0, 1), key);
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  ASSERT_TRUE(h.cache->FinishRecalls(3, 0).ok());
  EXPECT_EQ(*h.cache->ResidentPageBytes(3, 0, 1), theirs);
  EXPECT_EQ(h.cache->counters().pages_recalled_foreign, 1u);
  EXPECT_EQ(h.cache->counters().pages_recalled, 1u);
}

TEST(KvCacheManagerTest, StoredBytesThatFailTheirOwnChecksumAreRejected) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  PagePlan plan = EvictPageOne(h, 3, in);
  // Damaged in the store: the bytes changed, the stored checksum did not.
  ASSERT_TRUE(
      h.store.Corrupt(*h.cache->KeyOf(3, 0, 1), std::string(h.cache->pool(0).page_bytes(), 'x'))
          .ok());
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  EXPECT_EQ(h.cache->FinishRecalls(3, 0).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(h.cache->counters().pages_recalled_foreign, 0u);
}

TEST(KvCacheManagerTest, FailedBackupFailsTheSequence) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  h.store.SetMode(InProcessPageStore::Mode::kDown);
  Inputs in(4);
  ASSERT_TRUE(h.Prefill(3, 8, in).ok());  // the puts fail asynchronously
  absl::Status s = h.cache->ReapBackups(3, true);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  absl::Status later = h.Step(3, 1, in, nullptr);
  EXPECT_EQ(later.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(later.message().find("backup failed"), std::string::npos) << later;
  h.store.SetMode(InProcessPageStore::Mode::kUp);
  EXPECT_TRUE(h.cache->Cancel(3).ok());
  EXPECT_EQ(h.cache->pool(0).in_use(), 0u);
}

TEST(KvCacheManagerTest, FullTransferWindowPushesBackThenFailsClearly) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  CpuDevice device;
  InProcessPageStore store;
  TransferQueueOptions qopts;
  qopts.n_threads = 1;
  qopts.max_inflight_transfers = 1;
  auto queue = *PageTransferQueue::Create(&store, qopts);
  KvCacheOptions o;
  o.layout = PageLayout{.page_size = kPage, .n_kv_heads = kKvHeads, .head_dim = kDim,
                        .dtype = DType::kF32};
  o.n_layers = 1;
  o.n_q_heads = kQHeads;
  o.pool_pages_per_layer = 12;
  o.transfer_timeout = absl::Milliseconds(100);
  auto cache = *KvCacheManager::Create(o, &device, policy.get(), queue.get());
  ASSERT_TRUE(cache->AddSequence(1, {6}).ok());
  ASSERT_TRUE(cache->AddSequence(2, {6}).ok());
  store.SetMode(InProcessPageStore::Mode::kHang);
  Inputs in(3);
  std::vector<float> k = in.Next(8 * kRow), v = in.Next(8 * kRow);
  ASSERT_TRUE(cache->AppendTokenIds(1, std::vector<uint32_t>(8, 1)).ok());
  ASSERT_TRUE(cache->AppendTokenIds(2, std::vector<uint32_t>(8, 2)).ok());
  // Sequence 1's first backup takes the only place in the window.
  ASSERT_TRUE(cache->AppendKv(1, 0, k.data(), v.data(), 4).ok());
  // Sequence 2 has nothing of its own to wait for: it fails, and stays failed.
  EXPECT_EQ(cache->AppendKv(2, 0, k.data(), v.data(), 4).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(cache->AppendKv(2, 0, k.data(), v.data(), 1).code(),
            absl::StatusCode::kFailedPrecondition);
  // Sequence 1 waits for its own backup, which the hung store never
  // finishes: the deadline ends the wait.
  EXPECT_EQ(cache->AppendKv(1, 0, k.data() + 4 * kRow, v.data() + 4 * kRow, 4).code(),
            absl::StatusCode::kDeadlineExceeded);
  store.SetMode(InProcessPageStore::Mode::kUp);
  EXPECT_TRUE(cache->Cancel(1).ok());
  EXPECT_TRUE(cache->Cancel(2).ok());
  EXPECT_EQ(cache->pool(0).in_use(), 0u);
}

}  // namespace
}  // namespace kvtier::worker
