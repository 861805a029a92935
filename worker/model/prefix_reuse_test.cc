// Prefix reuse on stories260K through the in-process store: a second
// request that shares a prompt prefix loads it and its logits equal, bit
// for bit, those of recomputing the prompt; damaged or missing pages are
// never served (the request recomputes and counts it); a slow store makes
// the estimator recompute without loading anything.
#include "worker/model/prefix_reuse.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/prefix_reuse_testing.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::model {
namespace {

using ::testing::HasSubstr;
using testing::FixedEstimator;
using testing::MakeBackend;
using testing::PageHashOf;
using testing::RecomputedRequest;
using testing::RunRequest;
using testing::SharedPrefixPrompt;

const std::string kDir = KVTIER_STORIES260K_DIR;
constexpr int kSteps = 6;
constexpr int kLayers = 5;

class PrefixReuseTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = LoadModel(kDir + "/stories260K.bin", kDir + "/tok512.bin");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
    ASSERT_EQ(model_.weights.config.n_layers, kLayers);
    // Request 1 fills the store with the shared prefix's pages.
    auto first = MakeBackend(model_.weights, &store_);
    ASSERT_TRUE(first.ok()) << first.status();
    auto est = FixedEstimator(model_.weights.config, 1e12);
    ASSERT_TRUE(est.ok());
    auto r = RunRequest(model_.weights, **first, SharedPrefixPrompt(1), kSteps, *est);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->report.reused_tokens, 0u);
    // The reference: the second prompt recomputed, with its own empty store.
    auto ref = RecomputedRequest(model_.weights, SharedPrefixPrompt(2), kSteps, *est);
    ASSERT_TRUE(ref.ok()) << ref.status();
    reference_ = ref->logits;
  }

  // The second request, sharing the store.
  absl::StatusOr<testing::Request> Second(double get_bytes_per_s) {
    ASSIGN_OR_RETURN(backend_, MakeBackend(model_.weights, &store_));
    ASSIGN_OR_RETURN(ReuseEstimator est, FixedEstimator(model_.weights.config, get_bytes_per_s));
    return RunRequest(model_.weights, *backend_, SharedPrefixPrompt(2), kSteps, est);
  }

  LoadedModel model_;
  worker::InProcessPageStore store_;
  std::vector<std::vector<float>> reference_;
  std::unique_ptr<WorkerAttentionBackend> backend_;
};

TEST_F(PrefixReuseTest, LoadedPrefixGivesTheLogitsOfRecomputing) {
  auto r = Second(1e12);
  ASSERT_TRUE(r.ok()) << r.status();
  const PrefixReuseReport& rep = r->report;
  // 320 tokens; pages 0..17 hold only shared tokens: 288 tokens, 18 pages
  // of 5 layers.
  EXPECT_EQ(rep.stored_pages, 18u);
  EXPECT_EQ(rep.reusable_tokens, 288u);
  ASSERT_TRUE(rep.decided);
  EXPECT_TRUE(rep.decision.load);
  EXPECT_EQ(rep.reused_tokens, 288u);
  EXPECT_EQ(rep.fetch.pages_loaded, 18u * kLayers);
  EXPECT_EQ(rep.fetch.bytes_loaded, 18u * kLayers * testing::StoriesLayout().PageBytes());
  EXPECT_EQ(rep.fallbacks, 0u);
  // Every logit row, after the prompt and after each decode step.
  ASSERT_EQ(r->logits.size(), reference_.size());
  for (size_t i = 0; i < reference_.size(); ++i) {
    EXPECT_EQ(r->logits[i], reference_[i]) << "row " << i;
  }
  // The loaded pages entered the cache as stored: not backed up again.
  // 325 tokens went into the cache: 20 full pages a layer.
  const worker::CacheCounters& c = backend_->counters();
  EXPECT_EQ(c.pages_adopted, 18u * kLayers);
  EXPECT_EQ(c.pages_backed_up, (20u - 18u) * kLayers);
  // Past the budget of 8 pages the loaded pages were evicted, with a
  // stored copy, and can be recalled.
  EXPECT_GT(c.pages_evicted, 0u);
}

TEST_F(PrefixReuseTest, AWorkerReusesItsPromptBuffersAndStaysExact) {
  // One worker serves an unrelated prompt, then the shared one: the second
  // prompt's rows land in the buffers the first left (prompt_buffers.h).
  auto b = MakeBackend(model_.weights, &store_);
  ASSERT_TRUE(b.ok()) << b.status();
  auto est = FixedEstimator(model_.weights.config, 1e12);
  ASSERT_TRUE(est.ok());
  std::vector<int> other = SharedPrefixPrompt(1);
  for (size_t i = 1; i < other.size(); ++i) other[i] = 3 + (other[i] * 7) % 500;
  auto first = RunRequest(model_.weights, **b, other, 2, *est);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->report.reused_tokens, 0u);
  auto second = RunRequest(model_.weights, **b, SharedPrefixPrompt(2), kSteps, *est);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->report.reused_tokens, 288u);
  ASSERT_EQ(second->logits.size(), reference_.size());
  for (size_t i = 0; i < reference_.size(); ++i) {
    EXPECT_EQ(second->logits[i], reference_[i]) << "row " << i;
  }
  // A prompt computed in recycled buffers gives the logits of fresh ones.
  auto again = RunRequest(model_.weights, **b, other, 2, *est,
                          {.enabled = false, .probe_pages = 64});
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->logits, first->logits);
}

TEST_F(PrefixReuseTest, ChecksumMismatchFallsBackToRecompute) {
  const PageKey key{.hash = PageHashOf(SharedPrefixPrompt(2), 3), .layer = 2};
  const std::vector<PageKey> keys{key};
  auto got = store_.Get(keys);
  ASSERT_TRUE(got.ok());
  std::string bytes = (*got)[0].bytes;
  bytes[100] ^= 0x40;
  ASSERT_TRUE(store_.Corrupt(key, bytes).ok());
  auto r = Second(1e12);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->report.decision.load);
  EXPECT_EQ(r->report.fallbacks, 1u);
  EXPECT_EQ(r->report.reused_tokens, 0u);
  EXPECT_EQ(r->report.fetch.pages_rejected, 1u);
  EXPECT_THAT(r->report.fallback_reason, HasSubstr("page 3 of layer 2 does not match its checksum"));
  for (size_t i = 0; i < reference_.size(); ++i) EXPECT_EQ(r->logits[i], reference_[i]);
  EXPECT_EQ(backend_->counters().pages_adopted, 0u);
}

TEST_F(PrefixReuseTest, LayoutMismatchFallsBackToRecompute) {
  const PageKey key{.hash = PageHashOf(SharedPrefixPrompt(2), 0), .layer = 4};
  PageLayout other = testing::StoriesLayout();
  other.n_kv_heads = 2;
  other.head_dim = 16;
  ASSERT_TRUE(store_.SetLayout(key, other).ok());
  auto r = Second(1e12);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->report.fallbacks, 1u);
  EXPECT_EQ(r->report.fetch.pages_rejected, 1u);
  EXPECT_THAT(r->report.fallback_reason, HasSubstr("page 0 of layer 4 has another layout"));
  for (size_t i = 0; i < reference_.size(); ++i) EXPECT_EQ(r->logits[i], reference_[i]);
}

TEST_F(PrefixReuseTest, LostPageFallsBackToRecompute) {
  const PageKey key{.hash = PageHashOf(SharedPrefixPrompt(2), 15), .layer = 0};
  ASSERT_TRUE(store_.MarkLost(key).ok());
  auto r = Second(1e12);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->report.fallbacks, 1u);
  EXPECT_EQ(r->report.fetch.pages_missing, 1u);
  EXPECT_EQ(r->report.fetch.pages_rejected, 0u);
  EXPECT_THAT(r->report.fallback_reason, HasSubstr("page 15 of layer 0 is lost"));
  for (size_t i = 0; i < reference_.size(); ++i) EXPECT_EQ(r->logits[i], reference_[i]);
}

TEST_F(PrefixReuseTest, SlowStoreIsNotLoaded) {
  // 1 KB/s: 320 KiB of pages would take minutes; recomputing takes less.
  auto r = Second(1e3);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->report.decided);
  EXPECT_FALSE(r->report.decision.load);
  EXPECT_GT(r->report.decision.load_s, r->report.decision.recompute_s);
  EXPECT_EQ(r->report.reused_tokens, 0u);
  // Nothing was fetched (the store's gets are the decode steps' recalls).
  EXPECT_EQ(r->report.fetch.batches, 0u);
  EXPECT_EQ(r->report.fetch.pages_loaded, 0u);
  EXPECT_EQ(backend_->counters().pages_adopted, 0u);
  for (size_t i = 0; i < reference_.size(); ++i) EXPECT_EQ(r->logits[i], reference_[i]);
}

TEST_F(PrefixReuseTest, MeasuredRatesProbeTheStoreThenDecide) {
  ASSERT_TRUE((backend_ = *MakeBackend(model_.weights, &store_)) != nullptr);
  auto est = ReuseEstimator::Create(model_.weights.config);
  ASSERT_TRUE(est.ok());
  EXPECT_FALSE(est->knows_bandwidth());
  ASSERT_TRUE(CalibratePrefill(model_.weights, 64, *est).ok());
  EXPECT_TRUE(est->knows_prefill());
  const uint64_t gets_before = store_.get_calls();
  auto r = RunRequest(model_.weights, *backend_, SharedPrefixPrompt(2), kSteps, *est,
                      {.enabled = true, .probe_pages = 4});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(est->knows_bandwidth());
  EXPECT_TRUE(r->report.decided);
  // The probe read 4 pages of layer 0 in one batch before deciding.
  EXPECT_GE(store_.get_calls(), gets_before + 1);
  for (size_t i = 0; i < reference_.size(); ++i) EXPECT_EQ(r->logits[i], reference_[i]);
}

TEST_F(PrefixReuseTest, DisabledReuseNeverLooksUp) {
  const uint64_t lookups = store_.lookup_calls();
  ASSERT_TRUE((backend_ = *MakeBackend(model_.weights, &store_)) != nullptr);
  auto est = FixedEstimator(model_.weights.config, 1e12);
  auto r = RunRequest(model_.weights, *backend_, SharedPrefixPrompt(2), kSteps, *est,
                      {.enabled = false, .probe_pages = 64});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(store_.lookup_calls(), lookups);
  EXPECT_EQ(r->report.stored_pages, 0u);
}

// SmolLM2-135M (skipped unless KVTIER_SMOLLM2_GGUF names its GGUF): the
// loaded prefix gives the recomputed logits bit for bit, and a request of
// another length that recomputes the shared prefix writes bit-identical
// pages, so recalling the copies request 1 stored passes their checksums.
TEST(PrefixReuseSmolLM2Test, ExactLogitsAndIdenticalPagesAcrossRequests) {
  const char* path = std::getenv("KVTIER_SMOLLM2_GGUF");
  if (path == nullptr || *path == '\0') {
    GTEST_SKIP() << "set KVTIER_SMOLLM2_GGUF to SmolLM2-135M-Instruct's GGUF";
  }
  auto m = LoadModel(path, "");
  ASSERT_TRUE(m.ok()) << m.status();
  auto prompt = [](int question, int question_tokens) {
    std::vector<int> ids;
    for (int i = 0; i < 600; ++i) ids.push_back(100 + (i * 37) % 40000);
    for (int i = 0; i < question_tokens; ++i) ids.push_back(100 + (i * 11 + question * 101) % 40000);
    return ids;
  };
  worker::InProcessPageStore store;
  auto est = FixedEstimator(m->weights.config, 1e12);
  ASSERT_TRUE(est.ok());
  auto b1 = MakeBackend(m->weights, &store);
  ASSERT_TRUE(b1.ok()) << b1.status();
  ASSERT_TRUE(RunRequest(m->weights, **b1, prompt(1, 20), kSteps, *est).ok());
  auto ref = RecomputedRequest(m->weights, prompt(2, 20), kSteps, *est);
  ASSERT_TRUE(ref.ok()) << ref.status();
  auto b2 = MakeBackend(m->weights, &store);
  auto reused = RunRequest(m->weights, **b2, prompt(2, 20), kSteps, *est);
  ASSERT_TRUE(reused.ok()) << reused.status();
  EXPECT_EQ(reused->report.reused_tokens, 592u);  // 37 pages; the 38th holds question tokens
  for (size_t i = 0; i < ref->logits.size(); ++i) {
    EXPECT_EQ(reused->logits[i], ref->logits[i]) << "row " << i;
  }
  // Another length, recomputed: its prefill batches split differently.
  auto b3 = MakeBackend(m->weights, &store);
  auto other = RunRequest(m->weights, **b3, prompt(3, 45), kSteps, *est,
                          {.enabled = false, .probe_pages = 64});
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_GT((*b3)->counters().pages_recalled, 0u);
}

// Two layers of dim 4, hidden 6, two query heads over one KV head of 2.
ModelConfig TinyConfig() {
  ModelConfig c;
  c.dim = 4;
  c.hidden_dim = 6;
  c.n_layers = 2;
  c.n_heads = 2;
  c.n_kv_heads = 1;
  c.head_dim = 2;
  return c;
}

TEST(ReuseEstimatorTest, PrefillFlopsCountLayersAndCausalAttention) {
  const ModelConfig c = TinyConfig();
  auto est = ReuseEstimator::Create(c, {});
  ASSERT_TRUE(est.ok());
  // Weights per layer: wq, wo 4x4 each, wk, wv 2x4 each, three 4x6: 120.
  // Linear: 2 * 2 layers * 120 = 480 per token; attention: 4 * 2 * 4 = 32
  // per query-key pair. Positions [0, 3): 3 tokens, 1 + 2 + 3 pairs.
  EXPECT_DOUBLE_EQ(est->PrefillFlops(0, 3), 3 * 480.0 + 6 * 32.0);
  // Positions [2, 4): 2 tokens, 3 + 4 pairs.
  EXPECT_DOUBLE_EQ(est->PrefillFlops(2, 4), 2 * 480.0 + 7 * 32.0);
  EXPECT_DOUBLE_EQ(est->PrefillFlops(4, 4), 0.0);
}

TEST(ReuseEstimatorTest, DecidesOnlyWithBothRatesAndPrefersTheFaster) {
  const ModelConfig c = TinyConfig();
  auto est = ReuseEstimator::Create(c, {.get_bytes_per_s = 0, .prefill_flops_per_s = 0,
                                        .batch_latency_s = 0, .smoothing = 1.0});
  ASSERT_TRUE(est.ok());
  EXPECT_EQ(est->Decide(3, 100, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  est->ObservePrefill(0, 3, 1.0);  // 1632 FLOPs in 1 s
  EXPECT_DOUBLE_EQ(est->prefill_flops_per_s(), 1632.0);
  EXPECT_EQ(est->Decide(3, 100, 1).status().code(), absl::StatusCode::kFailedPrecondition);
  est->ObserveLoad(1000, 1.0);
  auto fast = est->Decide(3, 999, 1);  // 0.999 s against 1 s
  ASSERT_TRUE(fast.ok());
  EXPECT_TRUE(fast->load);
  EXPECT_DOUBLE_EQ(fast->recompute_s, 1.0);
  auto slow = est->Decide(3, 1000, 1);  // a tie recomputes
  ASSERT_TRUE(slow.ok());
  EXPECT_FALSE(slow->load);
  // Fixed rates ignore observations.
  auto fixed = ReuseEstimator::Create(c, {.get_bytes_per_s = 5, .prefill_flops_per_s = 0,
                                          .batch_latency_s = 0, .smoothing = 0.5});
  fixed->ObserveLoad(1000, 1.0);
  EXPECT_DOUBLE_EQ(fixed->get_bytes_per_s(), 5.0);
  EXPECT_EQ(ReuseEstimator::Create(c, {.get_bytes_per_s = -1, .prefill_flops_per_s = 0,
                                       .batch_latency_s = 0, .smoothing = 0.5})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::model
