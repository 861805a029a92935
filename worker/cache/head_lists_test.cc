// Plans with one page list per KV head (PagePlan::head_attend): the decode
// step attends each KV head over its own list, and the cache manager refuses
// lists that break policy.h's invariants.
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/policy/policy.h"

namespace kvtier::worker {
namespace {

constexpr uint32_t kPage = 4;
constexpr uint32_t kKvHeads = 2;
constexpr uint32_t kQHeads = 4;
constexpr uint32_t kDim = 8;
constexpr uint32_t kRow = kKvHeads * kDim;

// Keeps every page resident and attends the lists `lists(n_pages)` gives.
class ScriptedPolicy : public Policy {
 public:
  using Lists = std::function<std::vector<std::vector<int32_t>>(uint32_t n_pages)>;
  explicit ScriptedPolicy(Lists lists) : lists_(std::move(lists)) {}

  std::string_view name() const override { return "scripted"; }
  bool offloads() const override { return false; }
  bool NeedsScores(const LayerView&) const override { return false; }
  absl::StatusOr<PagePlan> Plan(const LayerView& view) override {
    PagePlan plan;
    plan.resident = AllPages(view.n_pages);
    plan.attend = plan.resident;
    if (!view.prefill) plan.head_attend = lists_(view.n_pages);
    return plan;
  }
  int32_t AppendVictim(const LayerView&) override { return -1; }

 private:
  Lists lists_;
};

struct Cache {
  explicit Cache(Policy* policy) {
    KvCacheOptions o;
    o.layout = PageLayout{.page_size = kPage, .n_kv_heads = kKvHeads, .head_dim = kDim,
                          .dtype = DType::kF32};
    o.n_layers = 1;
    o.n_q_heads = kQHeads;
    o.pool_pages_per_layer = 16;
    cache = *KvCacheManager::Create(o, &device, policy, nullptr);
    runner = std::make_unique<DecodeRunner>(cache.get(), nullptr);
  }
  CpuDevice device;
  std::unique_ptr<KvCacheManager> cache;
  std::unique_ptr<DecodeRunner> runner;
  StepStats stats;
};

std::vector<float> Random(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> out(n);
  for (float& x : out) x = dist(rng);
  return out;
}

// Softmax attention of query head h over the tokens of `pages`
// (k, v: [tokens][kKvHeads][kDim]).
std::vector<float> Reference(const std::vector<float>& q, const std::vector<float>& k,
                             const std::vector<float>& v, uint32_t n_tokens, uint32_t h,
                             const std::vector<int32_t>& pages) {
  const uint32_t g = h / (kQHeads / kKvHeads);
  std::vector<double> logits;
  std::vector<uint32_t> tokens;
  for (int32_t p : pages) {
    for (uint32_t t = p * kPage; t < std::min<uint32_t>((p + 1) * kPage, n_tokens); ++t) {
      double dot = 0;
      for (uint32_t d = 0; d < kDim; ++d) {
        dot += double{q[h * kDim + d]} * k[(t * kKvHeads + g) * kDim + d];
      }
      logits.push_back(dot / std::sqrt(double{kDim}));
      tokens.push_back(t);
    }
  }
  double max = -INFINITY, sum = 0;
  for (double l : logits) max = std::max(max, l);
  for (double& l : logits) sum += (l = std::exp(l - max));
  std::vector<float> out(kDim, 0.0f);
  for (size_t i = 0; i < tokens.size(); ++i) {
    for (uint32_t d = 0; d < kDim; ++d) {
      out[d] += static_cast<float>(logits[i] / sum * v[(tokens[i] * kKvHeads + g) * kDim + d]);
    }
  }
  return out;
}

TEST(HeadListsTest, EachKvHeadAttendsItsOwnList) {
  // 23 tokens after the decode token: pages 0..5, the last holding 3.
  const std::vector<std::vector<int32_t>> lists = {{0, 2, 5}, {1, 3, 4, 5}};
  ScriptedPolicy policy([&](uint32_t) { return lists; });
  Cache run(&policy);
  std::mt19937 rng(7);
  constexpr uint32_t kPrompt = 22;
  std::vector<float> k = Random((kPrompt + 1) * kRow, rng), v = Random((kPrompt + 1) * kRow, rng);
  std::vector<float> q = Random(kQHeads * kDim, rng);
  ASSERT_TRUE(run.cache->AddSequence(1, {16}).ok());
  ASSERT_TRUE(run.cache->AppendTokenIds(1, std::vector<uint32_t>(kPrompt, 3)).ok());
  ASSERT_TRUE(
      run.runner->Prefill(1, 0, k.data(), v.data(), kPrompt, q.data(), 1, &run.stats).ok());
  ASSERT_TRUE(run.cache->AppendTokenIds(1, {4}).ok());
  std::vector<float> out(kQHeads * kDim), lse(kQHeads);
  ASSERT_TRUE(run.runner
                  ->DecodeLayer(1, 0, q.data(), k.data() + kPrompt * kRow,
                                v.data() + kPrompt * kRow, out.data(), lse.data(), &run.stats)
                  .ok());
  for (uint32_t h = 0; h < kQHeads; ++h) {
    const std::vector<float> want = Reference(q, k, v, kPrompt + 1, h, lists[h / 2]);
    for (uint32_t d = 0; d < kDim; ++d) {
      EXPECT_NEAR(out[h * kDim + d], want[d], 1e-5) << "head " << h << " dim " << d;
    }
  }
  // The union of the lists counts as attended: pages 0..5.
  EXPECT_EQ(run.stats.pages_attended, 6u);
}

TEST(HeadListsTest, ListsThatBreakTheInvariantsAreInternalErrors) {
  const std::vector<std::vector<std::vector<int32_t>>> bad = {
      {{0, 1, 2}},                  // one list for two KV heads
      {{0, 5}, {1, 3}},             // a list without the last page
      {{0, 5}, {3, 1, 5}},          // not ascending
      {{0, 5}, {1, 6}},             // a page past the sequence
      {{0, 5}, {1, 5}, {2, 5}},     // three lists
  };
  for (size_t i = 0; i < bad.size(); ++i) {
    ScriptedPolicy policy([&](uint32_t) { return bad[i]; });
    Cache run(&policy);
    std::mt19937 rng(9);
    std::vector<float> k = Random(23 * kRow, rng), v = Random(23 * kRow, rng);
    std::vector<float> q = Random(kQHeads * kDim, rng);
    ASSERT_TRUE(run.cache->AddSequence(1, {16}).ok());
    ASSERT_TRUE(run.cache->AppendTokenIds(1, std::vector<uint32_t>(22, 3)).ok());
    ASSERT_TRUE(run.runner->Prefill(1, 0, k.data(), v.data(), 22, q.data(), 1, &run.stats).ok());
    ASSERT_TRUE(run.cache->AppendTokenIds(1, {4}).ok());
    std::vector<float> out(kQHeads * kDim);
    EXPECT_EQ(run.runner
                  ->DecodeLayer(1, 0, q.data(), k.data() + 22 * kRow, v.data() + 22 * kRow,
                                out.data(), nullptr, &run.stats)
                  .code(),
              absl::StatusCode::kInternal)
        << "case " << i;
  }
}

}  // namespace
}  // namespace kvtier::worker
