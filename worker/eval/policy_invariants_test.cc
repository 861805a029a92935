// Policies replayed page by page on stories260K's recorded attention
// (TraceRecordingBackend): after the prefill and after every decode step of
// every layer, the pages holding a pool slot never exceed the budget, and
// the pages a policy promises to keep (StreamingLLM's sink and window,
// the sliding window, ArkVale's sinks and window) are resident.
#include <unistd.h>

#include <filesystem>
#include <numeric>

#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/device/device.h"
#include "worker/eval/model_session.h"
#include "worker/eval/trace_recorder.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/policy/window_policy.h"
#include "worker/transfer/in_process_page_store.h"
#include "worker/transfer/page_transfer_queue.h"

namespace kvtier::eval {
namespace {

constexpr uint32_t kPageSize = 8, kBudget = 6, kSteps = 48;

class PolicyInvariantsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const std::string dir = KVTIER_STORIES260K_DIR;
    auto m = model::LoadModel(dir + "/stories260K.bin", dir + "/tok512.bin");
    ASSERT_TRUE(m.ok()) << m.status();
    path_ = new std::string(::testing::TempDir() + "/policy_invariants." + std::to_string(getpid()) + ".kvtrace");
    std::filesystem::remove(*path_);
    auto dense = model::DenseAttentionBackend::Create(m->weights.config.attention_shape());
    ASSERT_TRUE(dense.ok());
    std::string text;
    for (int i = 0; i < 10; ++i) text += "Once upon a time, there was a little girl named Lily. ";
    auto prompt = Encode(*m, text, true);
    ASSERT_TRUE(prompt.ok());
    auto rec = TraceRecordingBackend::Create(dense->get(), *path_, prompt->size(), 1, kSteps);
    ASSERT_TRUE(rec.ok());
    std::vector<int> generated;
    ASSERT_TRUE(RunForced(*m, **rec, *prompt, {}, kSteps + 1, &generated).ok());
    ASSERT_TRUE((*rec)->Finish().ok());
  }
  static void TearDownTestSuite() {
    std::filesystem::remove(*path_);
    delete path_;
    path_ = nullptr;
  }

  // Replays the trace under `policy`; `check` sees each layer's view after
  // the prefill and after every step.
  void Replay(worker::Policy* policy,
              const std::function<void(const worker::LayerView&, const std::string&)>& check) {
    auto reader = TraceReader::Open(*path_);
    ASSERT_TRUE(reader.ok()) << reader.status();
    const TraceHeader h = reader->header();
    worker::CpuDevice device;
    worker::InProcessPageStore store;
    auto queue = worker::PageTransferQueue::Create(&store, {});
    ASSERT_TRUE(queue.ok());
    worker::KvCacheOptions co;
    co.layout = PageLayout{.page_size = kPageSize, .n_kv_heads = h.n_kv_heads,
                           .head_dim = h.head_dim, .dtype = DType::kF32};
    co.n_layers = h.n_layers;
    co.n_q_heads = h.n_q_heads;
    co.pool_pages_per_layer = kBudget;
    co.max_pages_per_sequence = (h.prompt_len + h.decode_steps) / kPageSize + 1;
    co.max_sequences = 1;
    auto cache = worker::KvCacheManager::Create(co, &device, policy, queue->get());
    ASSERT_TRUE(cache.ok()) << cache.status();
    worker::DecodeRunner runner(cache->get(), nullptr);
    ASSERT_TRUE((*cache)->AddSequence(1, std::vector<uint32_t>(h.n_layers, kBudget)).ok());
    std::vector<uint32_t> ids(h.prompt_len);
    std::iota(ids.begin(), ids.end(), 0u);
    ASSERT_TRUE((*cache)->AppendTokenIds(1, ids).ok());
    for (uint32_t l = 0; l < h.n_layers; ++l) {
      TracePromptLayer p;
      ASSERT_TRUE(reader->ReadPromptLayer(l, &p).ok());
      worker::StepStats st;
      ASSERT_TRUE(runner.Prefill(1, l, p.keys.data(), p.values.data(), h.prompt_len,
                                 p.queries.data(), h.n_prompt_queries, &st).ok());
      check(*(*cache)->View(1, l), "prefill");
    }
    std::vector<float> out(size_t{h.n_q_heads} * h.head_dim);
    for (uint32_t s = 0; s < h.decode_steps; ++s) {
      ASSERT_TRUE((*cache)->AppendTokenIds(1, {h.prompt_len + s}).ok());
      for (uint32_t l = 0; l < h.n_layers; ++l) {
        TraceStep t;
        ASSERT_TRUE(reader->ReadStep(s, l, &t).ok());
        worker::StepStats st;
        ASSERT_TRUE(runner.DecodeLayer(1, l, t.query.data(), t.key.data(), t.value.data(),
                                       out.data(), nullptr, &st).ok());
        check(*(*cache)->View(1, l), "step " + std::to_string(s));
      }
    }
    ASSERT_TRUE((*cache)->Cancel(1).ok());
  }

  static std::string* path_;
};
std::string* PolicyInvariantsTest::path_ = nullptr;

// The pages holding a slot, ascending.
std::vector<uint32_t> Held(const worker::LayerView& v) {
  std::vector<uint32_t> held;
  for (uint32_t p = 0; p < v.n_pages; ++p) {
    if (worker::HoldsSlot(v.states[p])) held.push_back(p);
  }
  return held;
}

TEST_F(PolicyInvariantsTest, WindowsKeepExactlySinksAndNewestPages) {
  for (uint32_t sinks : {0u, 1u}) {
    worker::WindowPolicy policy({.n_sink_pages = sinks});
    int checks = 0;
    Replay(&policy, [&](const worker::LayerView& v, const std::string& when) {
      ASSERT_GT(v.n_pages, kBudget) << when;  // the budget binds
      std::vector<uint32_t> want;
      for (uint32_t p = 0; p < sinks; ++p) want.push_back(p);
      for (uint32_t p = v.n_pages - (kBudget - sinks); p < v.n_pages; ++p) want.push_back(p);
      EXPECT_EQ(Held(v), want) << "sinks " << sinks << ", layer " << v.layer << ", " << when;
      ++checks;
    });
    EXPECT_GT(checks, static_cast<int>(kSteps));
  }
}

TEST_F(PolicyInvariantsTest, ArkvaleKeepsSinksAndWindowWithinBudget) {
  worker::ArkvaleOptions o;
  o.n_sink_pages = 1;
  o.n_win_pages = 2;
  o.topk_pages = 4;
  o.n_unlimited_layers = 0;
  auto policy = worker::ArkvalePolicy::Create(o);
  ASSERT_TRUE(policy.ok()) << policy.status();
  uint64_t evicted_views = 0;
  Replay(policy->get(), [&](const worker::LayerView& v, const std::string& when) {
    const std::vector<uint32_t> held = Held(v);
    EXPECT_LE(held.size(), kBudget) << "layer " << v.layer << ", " << when;
    ASSERT_FALSE(held.empty());
    EXPECT_EQ(held.front(), 0u) << "sink page, layer " << v.layer << ", " << when;
    EXPECT_EQ(held.back(), v.n_pages - 1) << when;
    EXPECT_TRUE(worker::HoldsSlot(v.states[v.n_pages - 2])) << "window, " << when;
    evicted_views += held.size() < v.n_pages ? 1 : 0;
  });
  EXPECT_GT(evicted_views, 0u);
}

}  // namespace
}  // namespace kvtier::eval
