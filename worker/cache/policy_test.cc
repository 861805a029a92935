#include <limits>
#include <memory>
#include <random>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/policy/quest_policy.h"
#include "worker/policy/window_policy.h"
#include "worker/transfer/in_process_page_store.h"
#include "worker/transfer/page_transfer_queue.h"

namespace kvtier::worker {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

// A view over `states`, which must outlive it.
LayerView MakeView(uint32_t layer, const std::vector<PageState>& states, uint32_t n_tokens,
                   uint32_t budget, const std::vector<float>& scores) {
  LayerView view;
  view.layer = layer;
  view.n_pages = static_cast<uint32_t>(states.size());
  view.n_tokens = n_tokens;
  view.page_size = 4;
  view.budget_pages = budget;
  view.states = states;
  view.n_digested = n_tokens / 4;
  view.scores = scores;
  return view;
}

constexpr PageState R = PageState::kResident;
constexpr PageState E = PageState::kEvicted;
constexpr PageState F = PageState::kFilling;

ArkvaleOptions Ark() {
  ArkvaleOptions o;
  o.n_sink_pages = 1;
  o.n_win_pages = 2;
  o.topk_pages = 4;
  o.n_unlimited_layers = 1;
  return o;
}

TEST(ArkvalePolicyTest, KeepsSinksWindowTopKAndEvictsLowestResident) {
  auto policy = *ArkvalePolicy::Create(Ark());
  // 10 pages, the last partial; pages 3, 5, 6, 7 are evicted.
  std::vector<PageState> states = {R, R, R, E, R, E, E, E, R, F};
  std::vector<float> scores = {0.0f, 0.5f, 2.0f, 10.0f, 1.0f, 0.1f, 5.0f, 0.2f, -1.0f};
  LayerView view = MakeView(3, states, 38, 6, scores);
  ASSERT_TRUE(policy->NeedsScores(view));
  auto plan = policy->Plan(view);
  ASSERT_TRUE(plan.ok()) << plan.status();
  // Forced: sink 0, window 8 and 9. k_eff = 4 - 1 - 1 = 2 winners: 3 and 6.
  // The last slot goes to the best resident other (page 2); 1 and 4 leave.
  EXPECT_THAT(plan->resident, ElementsAre(0, 2, 3, 6, 8, 9));
  EXPECT_EQ(plan->attend, plan->resident);
}

// A NaN estimate ranks below every number when the best resident pages
// fill the budget: page 4 (1.0) takes the last slot, not page 1 (NaN).
TEST(ArkvalePolicyTest, ANanScoreRanksBelowEveryResidentPage) {
  auto policy = *ArkvalePolicy::Create(Ark());
  std::vector<PageState> states = {R, R, R, E, R, E, E, E, R, F};
  const float nan = std::numeric_limits<float>::quiet_NaN();
  std::vector<float> scores = {0.0f, nan, 0.5f, 10.0f, 1.0f, 0.1f, 5.0f, 0.2f, -1.0f};
  auto plan = policy->Plan(MakeView(3, states, 38, 6, scores));
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->resident, ElementsAre(0, 3, 4, 6, 8, 9));
}

TEST(ArkvalePolicyTest, PrefillGivesTheWholeBudgetToTheBestPages) {
  auto policy = *ArkvalePolicy::Create(Ark());
  std::vector<PageState> states = {R, R, R, E, R, E, E, E, R, F};
  std::vector<float> scores = {0.0f, 0.5f, 2.0f, 10.0f, 1.0f, 0.1f, 5.0f, 0.2f, -1.0f};
  LayerView view = MakeView(3, states, 38, 6, scores);
  view.prefill = true;
  auto plan = policy->Plan(view);
  ASSERT_TRUE(plan.ok());
  // budget - ns - nw = 3 winners: 3, 6, 2.
  EXPECT_THAT(plan->resident, ElementsAre(0, 2, 3, 6, 8, 9));
}

TEST(ArkvalePolicyTest, DenseLayersAndShortSequencesKeepEverything) {
  auto policy = *ArkvalePolicy::Create(Ark());
  std::vector<PageState> states = {R, R, R, F};
  LayerView short_view = MakeView(3, states, 14, 6, {});
  EXPECT_FALSE(policy->NeedsScores(short_view));
  EXPECT_THAT(policy->Plan(short_view)->resident, ElementsAre(0, 1, 2, 3));
  std::vector<PageState> long_states(10, R);
  LayerView dense = MakeView(0, long_states, 40, 6, {});
  EXPECT_FALSE(policy->NeedsScores(dense));
  EXPECT_EQ(policy->AppendVictim(dense), -1);
}

TEST(ArkvalePolicyTest, AppendVictimIsThePageLeavingTheWindow) {
  auto policy = *ArkvalePolicy::Create(Ark());
  std::vector<PageState> states = {R, E, R, R, R, R};
  // New page 6: the window becomes {5, 6}, page 4 leaves it.
  EXPECT_EQ(policy->AppendVictim(MakeView(2, states, 24, 5, {})), 4);
  // When that page is gone already, the oldest evictable page goes.
  states[4] = E;
  EXPECT_EQ(policy->AppendVictim(MakeView(2, states, 24, 5, {})), 2);
}

TEST(ArkvalePolicyTest, RejectsInconsistentOptionsAndBudgets) {
  ArkvaleOptions o = Ark();
  o.n_win_pages = 1;
  EXPECT_EQ(ArkvalePolicy::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Ark();
  o.topk_pages = 2;
  EXPECT_EQ(ArkvalePolicy::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  auto policy = *ArkvalePolicy::Create(Ark());
  std::vector<PageState> states(10, R);
  std::vector<float> scores(10, 0.0f);
  // top-k 4 is not below a budget of 4.
  EXPECT_EQ(policy->Plan(MakeView(3, states, 40, 4, scores)).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = Ark();
  o.topk_pages = 0;
  EXPECT_EQ((*ArkvalePolicy::Create(o))->TopK(64), 32u);
}

TEST(QuestPolicyTest, AttendsLastPagePlusTopScoresAndKeepsAllResident) {
  auto policy = *QuestPolicy::Create(QuestOptions{.page_budget = 4, .n_dense_layers = 2});
  std::vector<PageState> states(10, R);
  states[9] = F;
  std::vector<float> scores = {3.0f, 0.0f, 9.0f, 1.0f, 0.0f, 0.0f, 7.0f, 0.0f, 8.0f};
  LayerView view = MakeView(2, states, 38, 10, scores);
  ASSERT_TRUE(policy->NeedsScores(view));
  auto plan = policy->Plan(view);
  ASSERT_TRUE(plan.ok());
  EXPECT_THAT(plan->resident, ElementsAreArray(AllPages(10)));
  EXPECT_THAT(plan->attend, ElementsAre(2, 6, 8, 9));
  // Dense layers and prefill attend everything.
  EXPECT_FALSE(policy->NeedsScores(MakeView(1, states, 38, 10, scores)));
  view.prefill = true;
  EXPECT_THAT(policy->Plan(view)->attend, ElementsAreArray(AllPages(10)));
  EXPECT_EQ(QuestPolicy::Create(QuestOptions{.page_budget = 1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(QuestPolicyTest, PerKvHeadGivesEachHeadItsOwnTopPages) {
  auto policy = *QuestPolicy::Create(
      QuestOptions{.page_budget = 3, .n_dense_layers = 0, .per_kv_head = true});
  std::vector<PageState> states(6, R);
  states[5] = F;
  const std::vector<float> scores = {0, 0, 0, 0, 0};
  // Two KV heads, 5 digested pages each.
  const std::vector<float> heads = {5, 1, 4, 0, 2,   //
                                    0, 9, 1, 8, 3};
  LayerView view = MakeView(0, states, 22, 6, scores);
  view.head_scores = heads;
  auto plan = policy->Plan(view);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->resident, ElementsAreArray(AllPages(6)));
  ASSERT_EQ(plan->head_attend.size(), 2u);
  EXPECT_THAT(plan->head_attend[0], ElementsAre(0, 2, 5));
  EXPECT_THAT(plan->head_attend[1], ElementsAre(1, 3, 5));
  EXPECT_THAT(plan->attend, ElementsAre(0, 1, 2, 3, 5));
  // Without per-head scores it cannot plan.
  view.head_scores = {};
  EXPECT_EQ(policy->Plan(view).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(QuestPolicyTest, OffloadKeepsResidentOnlyWhatItAttends) {
  auto policy = *QuestPolicy::Create(
      QuestOptions{.page_budget = 64, .n_dense_layers = 1, .offload = true});
  EXPECT_TRUE(policy->offloads());
  // Pages 1 and 6 are evicted; the layer's budget (4), not page_budget,
  // sets how many pages a step attends.
  std::vector<PageState> states = {R, E, R, R, R, R, E, R, R, F};
  std::vector<float> scores = {3.0f, 0.0f, 9.0f, 1.0f, 0.0f, 0.0f, 7.0f, 0.0f, 8.0f};
  LayerView view = MakeView(2, states, 38, 4, scores);
  ASSERT_TRUE(policy->NeedsScores(view));
  auto plan = policy->Plan(view);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_THAT(plan->attend, ElementsAre(2, 6, 8, 9));
  EXPECT_EQ(plan->resident, plan->attend);  // 6 is recalled, 0, 3, 4, 5, 7 leave
  // The prefill's plan chooses too, since it decides what stays resident.
  view.prefill = true;
  ASSERT_TRUE(policy->NeedsScores(view));
  EXPECT_THAT(policy->Plan(view)->resident, ElementsAre(2, 6, 8, 9));
  // A new page at budget takes the oldest resident full page's slot; dense
  // layers give none up.
  EXPECT_EQ(policy->AppendVictim(MakeView(2, states, 38, 4, {})), 0);
  states[0] = E;
  EXPECT_EQ(policy->AppendVictim(MakeView(2, states, 38, 4, {})), 2);
  EXPECT_EQ(policy->AppendVictim(MakeView(0, states, 38, 4, {})), -1);
  // Without offload no page ever leaves.
  auto resident = *QuestPolicy::Create(QuestOptions{.page_budget = 4, .n_dense_layers = 1});
  EXPECT_FALSE(resident->offloads());
  EXPECT_EQ(resident->AppendVictim(MakeView(2, states, 38, 4, {})), -1);
  // Per-head lists could exceed the budget together.
  EXPECT_EQ(QuestPolicy::Create(QuestOptions{.per_kv_head = true, .offload = true})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

// One layer of Quest with its own pool (`pool_pages`) and store.
struct QuestRun {
  QuestRun(bool offload, uint32_t pool_pages)
      : QuestRun({.page_budget = 3, .n_dense_layers = 0, .offload = offload}, pool_pages) {}
  explicit QuestRun(QuestOptions options, uint32_t pool_pages = 32)
      : policy(*QuestPolicy::Create(options)) {
    queue = *PageTransferQueue::Create(&store, {});
    KvCacheOptions o;
    o.layout = PageLayout{.page_size = 4, .n_kv_heads = 2, .head_dim = 8, .dtype = DType::kF32};
    o.n_layers = 1;
    o.n_q_heads = 4;
    o.pool_pages_per_layer = pool_pages;
    o.max_pages_per_sequence = 64;
    cache = *KvCacheManager::Create(o, &device, policy.get(), queue.get());
    runner = std::make_unique<DecodeRunner>(cache.get(), nullptr);
    EXPECT_TRUE(cache->AddSequence(1, {pool_pages}).ok());
  }
  std::unique_ptr<QuestPolicy> policy;
  InProcessPageStore store;
  std::unique_ptr<PageTransferQueue> queue;
  CpuDevice device;
  std::unique_ptr<KvCacheManager> cache;
  std::unique_ptr<DecodeRunner> runner;
  StepStats stats;
};

TEST(QuestPolicyTest, OffloadAttendsExactlyWhatResidentQuestAttends) {
  // Quest attending 3 pages of 4 tokens: once with every page resident,
  // once with a pool of 3 pages and the rest paged out to the store.
  QuestRun resident(false, 32), offloaded(true, 3);
  std::mt19937 rng(11);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  auto next = [&](size_t n) {
    std::vector<float> out(n);
    for (float& x : out) x = dist(rng);
    return out;
  };
  constexpr uint32_t kRow = 2 * 8, kPrompt = 22;
  const std::vector<float> k = next(kPrompt * kRow), v = next(kPrompt * kRow);
  const std::vector<float> last_query = next(4 * 8);
  for (QuestRun* r : {&resident, &offloaded}) {
    ASSERT_TRUE(r->cache->AppendTokenIds(1, std::vector<uint32_t>(kPrompt, 7)).ok());
    ASSERT_TRUE(
        r->runner->Prefill(1, 0, k.data(), v.data(), kPrompt, last_query.data(), 1, &r->stats)
            .ok());
  }
  EXPECT_LE(offloaded.cache->pool(0).in_use(), 3u);
  for (uint32_t step = 0; step < 14; ++step) {
    const std::vector<float> q = next(4 * 8), kt = next(kRow), vt = next(kRow);
    std::vector<float> out[2];
    QuestRun* runs[2] = {&resident, &offloaded};
    for (int i = 0; i < 2; ++i) {
      out[i].resize(4 * 8);
      ASSERT_TRUE(runs[i]->cache->AppendTokenIds(1, {step}).ok());
      absl::Status s = runs[i]->runner->DecodeLayer(1, 0, q.data(), kt.data(), vt.data(),
                                                    out[i].data(), nullptr, &runs[i]->stats);
      ASSERT_TRUE(s.ok()) << s;
    }
    // Recalled pages are attended apart and merged by their LSE, so the
    // sums round differently; another page would move them by ~0.1.
    for (size_t i = 0; i < out[0].size(); ++i) {
      EXPECT_NEAR(out[0][i], out[1][i], 1e-5) << "step " << step << " element " << i;
    }
    EXPECT_LE(offloaded.cache->pool(0).high_water(), 3u);
  }
  EXPECT_EQ(resident.stats.pages_attended, offloaded.stats.pages_attended);
  EXPECT_EQ(resident.stats.pages_recalled, 0u);
  EXPECT_GT(offloaded.stats.pages_recalled, 0u);
  EXPECT_GT(resident.cache->pool(0).high_water(), 8u);
}

// Pages ranked three ways: by the min/max bound (Quest), by the exact
// attention mass of the bound's best candidates (rerank), and by the exact
// mass of every page. Each page's values mark it (channel p), so the
// output shows which pages a step attended.
TEST(QuestPolicyTest, ExactScoresAndRerankRankPagesByTheQuerysAttention) {
  constexpr uint32_t kD = 8, kKvHeads = 2, kRow = kKvHeads * kD, kPrompt = 22;
  // With the query all ones, a key filled with x meets it at 8x. Per page
  // (bound, then exact mass with scale 1/sqrt(8)):
  //   page 0: one key at 2.4, three at 0       bound 2.4, mass 5.3
  //   page 1: every key at 4                   bound 4,   mass 16.4
  //   page 2: one key at 3, three at -10       bound 3,   mass 3.0
  //   page 3: keys of +10 and -10 in two channels, meeting the query at 0,
  //           spanning +-10 in every channel   bound 40,  mass 4
  //   page 4: every key at 2.24                bound 2.24, mass 8.8
  auto fill = [](uint32_t t) -> float {
    switch (t / 4) {
      case 0: return t % 4 == 0 ? 0.3f : 0.0f;
      case 1: return 0.5f;
      case 2: return t % 4 == 0 ? 0.375f : -1.25f;
      case 4: return 0.28f;
      default: return 0.0f;
    }
  };
  std::vector<float> k(kPrompt * kRow, 0.0f), v(kPrompt * kRow, 0.0f);
  for (uint32_t t = 0; t < kPrompt; ++t) {
    const uint32_t page = t / 4;
    for (uint32_t h = 0; h < kKvHeads; ++h) {
      float* key = &k[t * kRow + h * kD];
      if (page == 3) {
        key[2 * (t % 4)] = 10.0f;
        key[2 * (t % 4) + 1] = -10.0f;
      } else if (page < 5) {
        std::fill_n(key, kD, fill(t));
      }
      v[t * kRow + h * kD + page] = 1.0f;
    }
  }
  const std::vector<float> q(4 * kD, 1.0f);
  std::vector<float> vt(kRow, 0.0f);
  vt[5] = vt[kD + 5] = 1.0f;
  const std::vector<float> kt(kRow, 0.0f);
  auto attended_pages = [&](QuestOptions options) {
    options.page_budget = 3;
    options.n_dense_layers = 0;
    QuestRun run(options);
    EXPECT_TRUE(run.cache->AppendTokenIds(1, std::vector<uint32_t>(kPrompt, 7)).ok());
    EXPECT_TRUE(run.runner->Prefill(1, 0, k.data(), v.data(), kPrompt, q.data(), 1, &run.stats)
                    .ok());
    EXPECT_TRUE(run.cache->AppendTokenIds(1, {8}).ok());
    std::vector<float> out(4 * kD);
    absl::Status s = run.runner->DecodeLayer(1, 0, q.data(), kt.data(), vt.data(), out.data(),
                                             nullptr, &run.stats);
    EXPECT_TRUE(s.ok()) << s;
    std::vector<int> pages;
    for (int c = 0; c < 6; ++c) {
      if (out[c] > 0.0f) pages.push_back(c);  // query head 0
    }
    return pages;
  };
  // The two best bounds: the wide page 3 and page 1.
  EXPECT_THAT(attended_pages({}), ElementsAre(1, 3, 5));
  // Rerank 2: the four best bounds (pages 0-3) by mass: pages 1 and 0.
  EXPECT_THAT(attended_pages({.rerank = 2}), ElementsAre(0, 1, 5));
  // Every page by mass: pages 1 and 4. Rerank 4 names 8 candidates of 5
  // pages, so every page is one.
  EXPECT_THAT(attended_pages({.exact_scores = true}), ElementsAre(1, 4, 5));
  EXPECT_THAT(attended_pages({.rerank = 4}), ElementsAre(1, 4, 5));
  EXPECT_EQ((*QuestPolicy::Create({.rerank = 2}))->name(), "quest_rerank");
  EXPECT_EQ((*QuestPolicy::Create({.exact_scores = true}))->name(), "quest_exact");
  for (QuestOptions bad : {QuestOptions{.offload = true, .exact_scores = true},
                           QuestOptions{.offload = true, .rerank = 2}}) {
    EXPECT_EQ(QuestPolicy::Create(bad).status().code(), absl::StatusCode::kInvalidArgument);
  }
}

TEST(WindowPolicyTest, DropsTheOldestPageButNeverTheSinks) {
  WindowPolicy streaming(WindowOptions{.n_sink_pages = 1});
  WindowPolicy sliding(WindowOptions{.n_sink_pages = 0});
  std::vector<PageState> states = {R, PageState::kDropped, R, R};
  LayerView view = MakeView(0, states, 16, 3, {});
  EXPECT_EQ(streaming.AppendVictim(view), 2);
  EXPECT_EQ(sliding.AppendVictim(view), 0);
  EXPECT_THAT(streaming.Plan(view)->resident, ElementsAre(0, 2, 3));
  EXPECT_EQ(streaming.name(), "streaming_llm");
  EXPECT_EQ(sliding.name(), "sliding_window");
}

}  // namespace
}  // namespace kvtier::worker
