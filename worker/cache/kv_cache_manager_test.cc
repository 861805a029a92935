#include "worker/cache/kv_cache_manager.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager_testing.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/policy/window_policy.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker {
namespace {

using testing::Harness;
using testing::Inputs;
using testing::kDim;
using testing::kQHeads;
using testing::kRow;
using testing::SmallArkvale;

uint32_t HeldPages(const LayerView& view) {
  uint32_t n = 0;
  for (PageState s : view.states) n += HoldsSlot(s) ? 1 : 0;
  return n;
}

TEST(KvCacheManagerTest, ArkvaleNeverExceedsBudgetAndKeepsSinksAndWindow) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  constexpr uint32_t kBudget = 6;
  Harness h(policy.get(), 2, kBudget);
  ASSERT_TRUE(h.cache->AddSequence(7, {kBudget, kBudget}).ok());
  Inputs in(1);
  ASSERT_TRUE(h.Prefill(7, 37, in).ok());
  for (uint32_t step = 0; step < 60; ++step) {
    ASSERT_TRUE(h.Step(7, 5000 + step, in, nullptr).ok());
    for (uint32_t l = 0; l < 2; ++l) {
      LayerView view = *h.cache->View(7, l);
      EXPECT_LE(HeldPages(view), kBudget);
      EXPECT_LE(h.cache->pool(l).high_water(), kBudget);
      EXPECT_TRUE(IsResident(view.states[0])) << "sink page, step " << step;
      EXPECT_TRUE(IsResident(view.states[view.n_pages - 1])) << "step " << step;
      EXPECT_TRUE(IsResident(view.states[view.n_pages - 2])) << "step " << step;
    }
  }
  EXPECT_GT(h.stats.pages_recalled, 0u);
  EXPECT_EQ(h.stats.bytes_recalled, h.stats.pages_recalled * h.cache->pool(0).page_bytes());
}

TEST(KvCacheManagerTest, PrefetchRecallsTheNextLayerDuringThisOne) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  constexpr uint32_t kBudget = 6;
  Harness h(policy.get(), 2, kBudget, absl::Seconds(10), DType::kF32,
            DecodeOptions{.prefetch_next_layer = true});
  ASSERT_TRUE(h.cache->AddSequence(7, {kBudget, kBudget}).ok());
  Inputs in(1);
  ASSERT_TRUE(h.Prefill(7, 37, in).ok());
  int prefetching_steps = 0;
  for (uint32_t step = 0; step < 60; ++step) {
    ASSERT_TRUE(h.cache->AppendTokenIds(7, {step}).ok());
    std::vector<float> q = in.Next(kQHeads * kDim), k = in.Next(kRow), v = in.Next(kRow);
    std::vector<float> out(kQHeads * kDim);
    ASSERT_TRUE(h.runner->DecodeLayer(7, 0, q.data(), k.data(), v.data(), out.data(), nullptr,
                                      &h.stats)
                    .ok());
    LayerView next = *h.cache->View(7, 1);
    prefetching_steps += std::count(next.states.begin(), next.states.end(),
                                    PageState::kRecalling) > 0;
    EXPECT_LE(HeldPages(next), kBudget);
    q = in.Next(kQHeads * kDim);
    ASSERT_TRUE(h.runner->DecodeLayer(7, 1, q.data(), k.data(), v.data(), out.data(), nullptr,
                                      &h.stats)
                    .ok());
    EXPECT_EQ(std::count(h.cache->View(7, 1)->states.begin(), h.cache->View(7, 1)->states.end(),
                         PageState::kRecalling),
              0);
    for (uint32_t l = 0; l < 2; ++l) EXPECT_LE(h.cache->pool(l).high_water(), kBudget);
  }
  EXPECT_GT(prefetching_steps, 0);
}

TEST(KvCacheManagerTest, ArkvaleWithBudgetCoveringContextEqualsFullCache) {
  auto arkvale = *ArkvalePolicy::Create(SmallArkvale());
  FullCachePolicy full;
  Harness a(arkvale.get(), 3, 64, absl::Seconds(10), DType::kF32,
            DecodeOptions{.prefetch_next_layer = true});
  Harness f(&full, 3, 64);
  ASSERT_TRUE(a.cache->AddSequence(1, {64, 64, 64}).ok());
  ASSERT_TRUE(f.cache->AddSequence(1, {64, 64, 64}).ok());
  Inputs ia(9), ib(9);
  ASSERT_TRUE(a.Prefill(1, 50, ia).ok());
  ASSERT_TRUE(f.Prefill(1, 50, ib).ok());
  std::vector<float> out_a, out_f;
  for (uint32_t step = 0; step < 40; ++step) {
    ASSERT_TRUE(a.Step(1, step, ia, &out_a).ok());
    ASSERT_TRUE(f.Step(1, step, ib, &out_f).ok());
  }
  ASSERT_EQ(out_a.size(), out_f.size());
  // Same pages, same order, same kernel: the outputs are bit-identical.
  for (size_t i = 0; i < out_a.size(); ++i) {
    ASSERT_EQ(out_a[i], out_f[i]) << i;
  }
  EXPECT_EQ(a.stats.pages_attended, f.stats.pages_attended);
  EXPECT_EQ(a.stats.pages_recalled, 0u);
  // ArkVale still backed every full page up: (50 + 40) / 4 = 22 per layer.
  EXPECT_EQ(a.cache->counters().pages_backed_up, 3u * 22);
}

TEST(KvCacheManagerTest, RecalledPageIsBitIdenticalToTheBackup) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 6, absl::Seconds(10), DType::kF16);
  ASSERT_TRUE(h.cache->AddSequence(3, {6}).ok());
  Inputs in(4);
  // 6 full pages fill the budget; page 1's bytes are taken while resident.
  ASSERT_TRUE(h.Prefill(3, 24, in).ok());
  const std::string page1 = *h.cache->ResidentPageBytes(3, 0, 1);
  ASSERT_TRUE(h.cache->ReapBackups(3, /*wait=*/true).ok());
  // Two more pages push page 1 out (it leaves via AppendVictim or a plan).
  std::vector<float> k = in.Next(8 * kRow), v = in.Next(8 * kRow);
  ASSERT_TRUE(h.cache->AppendTokenIds(3, std::vector<uint32_t>(8, 77)).ok());
  ASSERT_TRUE(h.cache->AppendKv(3, 0, k.data(), v.data(), 8).ok());
  PagePlan drop;
  drop.resident = {0, 2, 3, 6, 7};
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, drop).ok());
  LayerView view = *h.cache->View(3, 0);
  ASSERT_EQ(view.states[1], PageState::kEvicted);
  // A plan that keeps page 1 must recall it.
  PagePlan plan;
  plan.resident = {0, 1, 2, 6, 7};
  plan.attend = plan.resident;
  ASSERT_TRUE(h.cache->ApplyPlan(3, 0, plan).ok());
  EXPECT_EQ(h.cache->View(3, 0)->states[1], PageState::kRecalling);
  ASSERT_TRUE(h.cache->FinishRecalls(3, 0).ok());
  EXPECT_EQ(h.cache->View(3, 0)->states[1], PageState::kResident);
  EXPECT_EQ(*h.cache->ResidentPageBytes(3, 0, 1), page1);
  EXPECT_EQ(h.cache->counters().pages_recalled, 1u);
}

TEST(KvCacheManagerTest, CancelReleasesPinsAndPages) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 2, 12);
  ASSERT_TRUE(h.cache->AddSequence(1, {6, 6}).ok());
  ASSERT_TRUE(h.cache->AddSequence(2, {6, 6}).ok());
  EXPECT_EQ(h.cache->AddSequence(3, {1, 1}).code(), absl::StatusCode::kResourceExhausted);
  Inputs in(2);
  ASSERT_TRUE(h.Prefill(1, 30, in).ok());
  ASSERT_TRUE(h.Prefill(2, 9, in).ok());
  for (uint32_t i = 0; i < 5; ++i) ASSERT_TRUE(h.Step(1, i, in, nullptr).ok());
  ASSERT_TRUE(h.cache->ReapBackups(1, true).ok());
  ASSERT_TRUE(h.cache->ReapBackups(2, true).ok());
  EXPECT_EQ(h.store.live_pin_count(), 2u);
  // Sequence 1: 35 tokens = 8 full pages on 2 layers. Sequence 2's two
  // pages have the same tokens as sequence 1's first two, hence the same keys.
  EXPECT_EQ(h.store.pinned_key_count(), 2u * 8);
  EXPECT_EQ(h.cache->PinId(1)->size(), 16u);
  EXPECT_NE(*h.cache->PinId(1), *h.cache->PinId(2));

  ASSERT_TRUE(h.cache->Cancel(1).ok());
  EXPECT_EQ(h.store.live_pin_count(), 1u);
  EXPECT_EQ(h.store.pinned_key_count(), 2u * 2);
  EXPECT_EQ(h.cache->pool(0).in_use(), 3u);  // sequence 2's 9 tokens
  EXPECT_EQ(h.cache->pool(0).reserved(), 6u);
  EXPECT_EQ(h.cache->View(1, 0).status().code(), absl::StatusCode::kNotFound);
  // The freed budget admits a new sequence.
  EXPECT_TRUE(h.cache->AddSequence(3, {6, 6}).ok());
  ASSERT_TRUE(h.cache->Cancel(2).ok());
  ASSERT_TRUE(h.cache->Cancel(3).ok());
  EXPECT_EQ(h.store.live_pin_count(), 0u);
  EXPECT_EQ(h.cache->pool(0).in_use(), 0u);
  EXPECT_EQ(h.cache->pool(1).reserved(), 0u);
}

// Polls `done` every 20 ms for up to 20 s.
bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return done();
}

// A sequence that makes no calls (a paused request) keeps its pin: the
// manager extends it on its own every third of the TTL.
TEST(KvCacheManagerTest, AWaitingSequenceKeepsItsPinAlive) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 8, absl::Seconds(10), DType::kF32, DecodeOptions(),
            /*pin_ttl_ms=*/300);
  ASSERT_TRUE(h.cache->AddSequence(1, {6}).ok());
  Inputs in(3);
  ASSERT_TRUE(h.Prefill(1, 20, in).ok());
  ASSERT_TRUE(h.cache->ReapBackups(1, true).ok());
  const std::string pin = *h.cache->PinId(1);
  ASSERT_FALSE(pin.empty());
  const uint64_t pin_calls = h.store.pin_calls();
  // No call into the manager from here on.
  EXPECT_TRUE(Eventually([&] { return h.store.pin_calls() >= pin_calls + 3; }));
  EXPECT_EQ(*h.cache->PinId(1), pin);
  EXPECT_EQ(h.store.live_pin_count(), 1u);
}

// When the store no longer knows the pin, the next call pins every stored
// page of the sequence under a new one.
TEST(KvCacheManagerTest, ALostPinIsReplacedCoveringEveryStoredPage) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 2, 12, absl::Seconds(10), DType::kF32, DecodeOptions(),
            /*pin_ttl_ms=*/300);
  ASSERT_TRUE(h.cache->AddSequence(1, {6, 6}).ok());
  Inputs in(4);
  ASSERT_TRUE(h.Prefill(1, 26, in).ok());  // 6 full pages per layer
  ASSERT_TRUE(h.cache->ReapBackups(1, true).ok());
  const std::string old_pin = *h.cache->PinId(1);
  ASSERT_TRUE(h.store.Unpin(old_pin).ok());  // the store forgets it
  ASSERT_EQ(h.store.live_pin_count(), 0u);
  EXPECT_TRUE(Eventually([&] {
    EXPECT_TRUE(h.cache->ReapBackups(1, true).ok());
    return h.store.live_pin_count() == 1u;
  }));
  EXPECT_NE(*h.cache->PinId(1), old_pin);
  EXPECT_EQ(h.store.pinned_key_count(), 2u * 6);
  ASSERT_TRUE(h.cache->Cancel(1).ok());
  EXPECT_EQ(h.store.live_pin_count(), 0u);
}

// A backup that outlives its deadline and the sequence must not pin after
// Cancel released the pin: nobody would release that one.
TEST(KvCacheManagerTest, ABackupThatOutlivesCancelPinsNothing) {
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  Harness h(policy.get(), 1, 8, /*timeout=*/absl::Seconds(1));
  ASSERT_TRUE(h.cache->AddSequence(1, {6}).ok());
  Inputs in(5);
  ASSERT_TRUE(h.Prefill(1, 8, in).ok());
  ASSERT_TRUE(h.cache->ReapBackups(1, true).ok());
  ASSERT_EQ(h.store.live_pin_count(), 1u);
  h.store.SetMode(InProcessPageStore::Mode::kHang);
  // One more full page: its backup hangs in the store.
  ASSERT_TRUE(h.cache->AppendTokenIds(1, std::vector<uint32_t>(4, 9)).ok());
  std::vector<float> k = in.Next(4 * kRow), v = in.Next(4 * kRow);
  ASSERT_TRUE(h.cache->AppendKv(1, 0, k.data(), v.data(), 4).ok());
  const uint64_t pin_calls = h.store.pin_calls();
  std::thread cancel([&] { EXPECT_TRUE(h.cache->Cancel(1).ok()); });
  // Cancel gives the backup up at its 1 s deadline, releases the pin and
  // submits the unpin, which waits for the store too.
  absl::SleepFor(absl::Milliseconds(1500));
  h.store.SetMode(InProcessPageStore::Mode::kUp);
  cancel.join();
  EXPECT_TRUE(Eventually([&] { return h.queue->inflight_transfers() == 0; }));
  EXPECT_EQ(h.store.pin_calls(), pin_calls);
  EXPECT_EQ(h.store.live_pin_count(), 0u);
}

// Evicts page 1 of a 1-layer sequence and returns a plan that recalls it.
TEST(KvCacheManagerTest, FullCacheRefusesToGrowPastItsBudget) {
  FullCachePolicy full;
  Harness h(&full, 1, 4);
  ASSERT_TRUE(h.cache->AddSequence(1, {2}).ok());
  Inputs in(1);
  ASSERT_TRUE(h.Prefill(1, 8, in).ok());
  std::vector<float> k = in.Next(kRow), v = in.Next(kRow);
  ASSERT_TRUE(h.cache->AppendTokenIds(1, {1}).ok());
  EXPECT_EQ(h.cache->AppendKv(1, 0, k.data(), v.data(), 1).code(),
            absl::StatusCode::kResourceExhausted);
}

TEST(KvCacheManagerTest, RejectsInvalidInputsWithoutChangingState) {
  FullCachePolicy full;
  Harness h(&full, 2, 4);
  EXPECT_EQ(h.cache->AddSequence(1, {2}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.cache->AddSequence(1, {0, 2}).code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(h.cache->AddSequence(1, {2, 2}).ok());
  EXPECT_EQ(h.cache->AddSequence(1, {2, 2}).code(), absl::StatusCode::kAlreadyExists);
  std::vector<float> k(kRow), v(kRow);
  // No token ids yet.
  EXPECT_EQ(h.cache->AppendKv(1, 0, k.data(), v.data(), 1).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(h.cache->AppendTokenIds(1, {5}).ok());
  EXPECT_EQ(h.cache->AppendKv(1, 2, k.data(), v.data(), 1).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h.cache->View(1, 0)->n_tokens, 0u);
  EXPECT_EQ(h.cache->AppendKv(9, 0, k.data(), v.data(), 1).code(), absl::StatusCode::kNotFound);
  // A plan over the budget is refused.
  ASSERT_TRUE(h.cache->AppendKv(1, 0, k.data(), v.data(), 1).ok());
  PagePlan plan;
  plan.resident = {0, 0};
  EXPECT_EQ(h.cache->ApplyPlan(1, 0, plan).code(), absl::StatusCode::kInternal);
}

TEST(KvCacheManagerTest, OptionsAreValidated) {
  KvCacheOptions o;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);  // no heads
  o.layout = PageLayout{.page_size = 4, .n_kv_heads = 2, .head_dim = 8, .dtype = DType::kF32};
  o.n_layers = 1;
  o.n_q_heads = 3;
  o.pool_pages_per_layer = 4;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);  // 3 % 2
  o.n_q_heads = 4;
  EXPECT_TRUE(o.Validate().ok());
  o.layout.dtype = DType::kInt8;
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o.layout.dtype = DType::kF32;
  for (DType digests : {DType::kBF16, DType::kFp8E4M3, DType::kInt8}) {
    o.digest_dtype = digests;
    EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument) << DTypeName(digests);
  }
  o.digest_dtype = DType::kF16;
  EXPECT_TRUE(o.Validate().ok());
  o.transfer_timeout = absl::ZeroDuration();
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  // An offloading policy needs a transfer queue.
  o.transfer_timeout = absl::Seconds(1);
  CpuDevice device;
  auto policy = *ArkvalePolicy::Create(SmallArkvale());
  EXPECT_EQ(KvCacheManager::Create(o, &device, policy.get(), nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::worker
