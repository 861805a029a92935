#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/policy/quest_policy.h"
#include "worker/policy/token_policy.h"
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

// Both policies see the same history: token 0 was the prompt's heavy
// hitter, but the current query ignores it.
TEST(TokenPolicyTest, H2oKeepsHeavyHittersTovaDropsLowestCurrentScore) {
  auto h2o = *H2oPolicy::Create(H2oOptions{.recent_fraction = 1.0 / 3.0});
  TovaPolicy tova;
  const std::vector<float> prompt_mass = {0.8f, 0.1f, 0.1f};
  const std::vector<float> step_mass = {0.0f, 0.3f, 0.3f, 0.4f};
  for (TokenPolicy* p : std::vector<TokenPolicy*>{h2o.get(), &tova}) {
    auto kept = p->SelectPrefill(1, 0, /*capacity=*/4, prompt_mass, 1);
    ASSERT_TRUE(kept.ok());
    EXPECT_THAT(*kept, ElementsAre(0, 1, 2));
  }
  // H2O: accumulated 0.8, 0.4, 0.4, 0.4; the newest (position 3) is recent;
  // of the rest the lowest, oldest first, is slot 1.
  EXPECT_THAT(*h2o->AfterAttention(1, 0, 4, 3, step_mass, 1), ElementsAre(1));
  // TOVA: the current query gives slot 0 nothing.
  EXPECT_THAT(*tova.AfterAttention(1, 0, 4, 3, step_mass, 1), ElementsAre(0));
  // The slot arrays followed the swap-remove: H2O now holds positions
  // 0, 3, 2, so a step that favours slot 1 (position 3) keeps it.
  EXPECT_THAT(*h2o->AfterAttention(1, 0, 4, 4, {0.0f, 0.5f, 0.0f, 0.5f}, 1), ElementsAre(2));
}

TEST(TokenPolicyTest, PrefillOverCapacityKeepsRecentAndHeavy) {
  auto h2o = *H2oPolicy::Create(H2oOptions{.recent_fraction = 0.5});
  TovaPolicy tova;
  const std::vector<float> mass = {0.1f, 0.9f, 0.05f, 0.6f, 0.02f, 0.01f, 0.2f, 0.3f};
  // capacity 5: 4 kept; H2O: 2 recent (6, 7) + 2 heavy (1, 3).
  EXPECT_THAT(*h2o->SelectPrefill(1, 0, 5, mass, 1), ElementsAre(1, 3, 6, 7));
  // TOVA: the 4 largest: 1, 3, 7, 6.
  EXPECT_THAT(*tova.SelectPrefill(1, 0, 5, mass, 1), ElementsAre(1, 3, 6, 7));
  const std::vector<float> mass2 = {0.5f, 0.9f, 0.05f, 0.6f, 0.02f, 0.01f, 0.2f, 0.3f};
  EXPECT_THAT(*h2o->SelectPrefill(2, 0, 5, mass2, 1), ElementsAre(1, 3, 6, 7));
  EXPECT_THAT(*tova.SelectPrefill(2, 0, 5, mass2, 1), ElementsAre(0, 1, 3, 7));
  EXPECT_EQ(tova.SelectPrefill(3, 0, 1, mass, 1).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(H2oPolicy::Create(H2oOptions{.recent_fraction = 2.0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TokenPolicyTest, MismatchedMassIsAnError) {
  TovaPolicy tova;
  ASSERT_TRUE(tova.SelectPrefill(1, 0, 8, {0.5f, 0.5f}, 1).ok());
  EXPECT_EQ(tova.AfterAttention(1, 0, 8, 2, {1.0f}, 1).status().code(),
            absl::StatusCode::kInternal);
}

KvCacheOptions TokenCacheOptions() {
  KvCacheOptions o;
  o.layout = PageLayout{.page_size = 4, .n_kv_heads = 1, .head_dim = 2, .dtype = DType::kF32};
  o.n_layers = 1;
  o.n_q_heads = 1;
  o.pool_pages_per_layer = 4;
  return o;
}

TEST(TokenEvictionTest, EvictTokensMovesTheNewestIntoTheHoles) {
  TovaPolicy tova;
  CpuDevice device;
  auto cache = *KvCacheManager::Create(TokenCacheOptions(), &device, &tova, nullptr);
  ASSERT_TRUE(cache->AddSequence(1, {3}).ok());
  std::vector<float> k(16), v(16);
  for (int i = 0; i < 16; ++i) {
    k[i] = static_cast<float>(i / 2);  // token t's key is (t, t)
    v[i] = 100.0f + static_cast<float>(i / 2);
  }
  ASSERT_TRUE(cache->AppendTokenIds(1, std::vector<uint32_t>(8, 0)).ok());
  ASSERT_TRUE(cache->AppendKv(1, 0, k.data(), v.data(), 8).ok());
  const std::vector<uint32_t> victims = {5, 2};
  ASSERT_TRUE(cache->EvictTokens(1, 0, victims).ok());
  LayerView view = *cache->View(1, 0);
  EXPECT_EQ(view.n_tokens, 6u);
  EXPECT_EQ(view.n_pages, 2u);
  EXPECT_EQ(view.states[1], PageState::kFilling);
  // Slots now hold tokens 0, 1, 6, 3 | 4, 7.
  std::string p0 = *cache->ResidentPageBytes(1, 0, 0);
  std::string p1 = *cache->ResidentPageBytes(1, 0, 1);
  auto key = [](const std::string& page, int slot) {
    float f;
    std::memcpy(&f, page.data() + slot * 2 * sizeof(float), sizeof(f));
    return f;
  };
  auto value = [](const std::string& page, int slot) {
    float f;
    std::memcpy(&f, page.data() + (8 + slot * 2) * sizeof(float), sizeof(f));
    return f;
  };
  EXPECT_EQ(key(p0, 2), 6.0f);
  EXPECT_EQ(value(p0, 2), 106.0f);
  EXPECT_EQ(key(p1, 0), 4.0f);
  EXPECT_EQ(key(p1, 1), 7.0f);
  // Evicting two more empties the second page, which goes back to the pool.
  ASSERT_TRUE(cache->EvictTokens(1, 0, std::vector<uint32_t>{5, 4}).ok());
  EXPECT_EQ(cache->View(1, 0)->n_pages, 1u);
  EXPECT_EQ(cache->pool(0).in_use(), 1u);
  EXPECT_EQ(cache->EvictTokens(1, 0, std::vector<uint32_t>{1, 2}).code(),
            absl::StatusCode::kInvalidArgument);
}

// Two KV heads evict different slots: each head's slots get that head's
// slice of the newest token, the other head's bytes stay where they were.
TEST(TokenEvictionTest, EvictHeadTokensMovesEachHeadsNewestIntoItsHoles) {
  TovaPolicy tova;
  CpuDevice device;
  KvCacheOptions o = TokenCacheOptions();
  o.layout.n_kv_heads = 2;
  o.n_q_heads = 2;
  auto cache = *KvCacheManager::Create(o, &device, &tova, nullptr);
  ASSERT_TRUE(cache->AddSequence(1, {3}).ok());
  // Token t, head h: key (10 t + h, 10 t + h), value 1000 + the key.
  std::vector<float> k(32), v(32);
  for (int t = 0; t < 8; ++t) {
    for (int h = 0; h < 2; ++h) {
      for (int c = 0; c < 2; ++c) {
        k[(t * 2 + h) * 2 + c] = static_cast<float>(10 * t + h);
        v[(t * 2 + h) * 2 + c] = 1000.0f + static_cast<float>(10 * t + h);
      }
    }
  }
  ASSERT_TRUE(cache->AppendTokenIds(1, std::vector<uint32_t>(8, 0)).ok());
  ASSERT_TRUE(cache->AppendKv(1, 0, k.data(), v.data(), 8).ok());
  auto held = [&](int head) {
    std::vector<float> keys, values;
    EXPECT_TRUE(cache->ReadTokens(1, 0, &keys, &values).ok());
    std::vector<int> tokens;
    for (size_t j = 0; j < keys.size() / 4; ++j) {
      const float key = keys[j * 4 + head * 2];
      EXPECT_EQ(keys[j * 4 + head * 2 + 1], key);
      EXPECT_EQ(values[j * 4 + head * 2], 1000.0f + key);
      EXPECT_EQ(static_cast<int>(key) % 10, head);
      tokens.push_back(static_cast<int>(key) / 10);
    }
    return tokens;
  };
  // Bad lists change nothing: not one per head, a head's list ascending,
  // a slot beyond the cache.
  EXPECT_EQ(cache->EvictHeadTokens(1, 0, std::vector<uint32_t>{5, 2, 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->EvictHeadTokens(1, 0, std::vector<uint32_t>{5, 2, 1, 6}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->EvictHeadTokens(1, 0, std::vector<uint32_t>{8, 2, 6, 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(cache->View(1, 0)->n_tokens, 8u);
  EXPECT_THAT(held(0), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  EXPECT_THAT(held(1), ElementsAre(0, 1, 2, 3, 4, 5, 6, 7));
  // Head 0 drops tokens 5 and 2, head 1 tokens 6 and 1.
  ASSERT_TRUE(cache->EvictHeadTokens(1, 0, std::vector<uint32_t>{5, 2, 6, 1}).ok());
  EXPECT_EQ(cache->View(1, 0)->n_tokens, 6u);
  EXPECT_THAT(held(0), ElementsAre(0, 1, 6, 3, 4, 7));
  EXPECT_THAT(held(1), ElementsAre(0, 7, 2, 3, 4, 5));
  // A shared eviction moves both heads' slices of the newest token.
  ASSERT_TRUE(cache->EvictTokens(1, 0, std::vector<uint32_t>{0}).ok());
  EXPECT_THAT(held(0), ElementsAre(7, 1, 6, 3, 4));
  EXPECT_THAT(held(1), ElementsAre(5, 7, 2, 3, 4));
  // Down to one page: the second goes back to the pool.
  ASSERT_TRUE(cache->EvictHeadTokens(1, 0, std::vector<uint32_t>{4, 0, 4, 1}).ok());
  EXPECT_EQ(cache->View(1, 0)->n_pages, 1u);
  EXPECT_EQ(cache->pool(0).in_use(), 1u);
  EXPECT_THAT(held(0), ElementsAre(3, 1, 6));
  EXPECT_THAT(held(1), ElementsAre(5, 3, 2));
}

// Per-head lists: each list keeps and evicts by its own mass.
TEST(TokenPolicyTest, PerHeadListsChooseTheirOwnTokens) {
  auto h2o = *H2oPolicy::Create(H2oOptions{.recent_fraction = 0.0, .per_kv_head = true});
  EXPECT_TRUE(h2o->per_kv_head());
  EXPECT_EQ(h2o->name(), "h2o_per_head");
  EXPECT_FALSE((*H2oPolicy::Create({}))->per_kv_head());
  EXPECT_FALSE(TovaPolicy().per_kv_head());
  // Capacity 3 keeps 2 of 4 prompt tokens per list.
  const std::vector<float> prompt = {0.9f, 0.1f, 0.0f, 0.5f,   // head 0
                                     0.0f, 0.2f, 0.7f, 0.6f};  // head 1
  EXPECT_THAT(*h2o->SelectPrefill(1, 0, 3, prompt, 2), ElementsAre(0, 3, 2, 3));
  // Slots per head: head 0 holds 0, 3 (+ new 4); head 1 holds 2, 3 (+ 4).
  // Accumulated: head 0 {0.9, 0.5 + 0.4, 0.1} -> slot 2 goes; head 1
  // {0.7 + 0.0, 0.6 + 0.3, 0.5}: slot 2 (position 4, 0.5) goes.
  EXPECT_THAT(*h2o->AfterAttention(1, 0, 3, 4, {0.0f, 0.4f, 0.1f, 0.0f, 0.3f, 0.5f}, 2),
              ElementsAre(2, 2));
  // Head 0 {0.9, 0.9, 0.2}: slot 2; head 1 {1.2, 0.9, 1.0}: slot 1.
  EXPECT_THAT(*h2o->AfterAttention(1, 0, 3, 5, {0.0f, 0.0f, 0.2f, 0.5f, 0.0f, 1.0f}, 2),
              ElementsAre(2, 1));
  // Masses that do not split into the lists, or a list count other than
  // the prefill's, are errors.
  EXPECT_EQ(h2o->SelectPrefill(2, 0, 3, {0.1f, 0.2f, 0.3f}, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(h2o->AfterAttention(1, 0, 3, 6, {0.1f, 0.2f, 0.3f}, 1).status().code(),
            absl::StatusCode::kInternal);
}

// Per-head H2O through the decode loop on two KV heads: every head keeps
// its own tokens (distinct, whole, its own slices) within the budget, and
// the heads come to hold different tokens.
TEST(TokenEvictionTest, PerHeadH2oKeepsEachHeadsOwnTokens) {
  auto h2o = *H2oPolicy::Create(H2oOptions{.per_kv_head = true});
  CpuDevice device;
  KvCacheOptions o = TokenCacheOptions();
  o.layout.n_kv_heads = 2;
  o.n_q_heads = 4;
  auto cache = *KvCacheManager::Create(o, &device, h2o.get(), nullptr);
  DecodeRunner runner(cache.get(), nullptr);
  ASSERT_TRUE(cache->AddSequence(1, {3}).ok());  // 12 tokens
  std::mt19937 rng(11);
  std::normal_distribution<float> dist;
  // Token t, head h: key channel 1 encodes (t, h); channel 0 is random.
  auto token_kv = [&](int t, float* k, float* v) {
    for (int h = 0; h < 2; ++h) {
      k[h * 2] = dist(rng);
      k[h * 2 + 1] = 0.001f * static_cast<float>(t * 2 + h);
      v[h * 2] = static_cast<float>(t * 2 + h);
      v[h * 2 + 1] = 0.0f;
    }
  };
  std::vector<float> k(80), v(80), q(8 * 20);
  for (int t = 0; t < 20; ++t) token_kv(t, &k[t * 4], &v[t * 4]);
  for (float& x : q) x = dist(rng);
  StepStats stats;
  ASSERT_TRUE(cache->AppendTokenIds(1, std::vector<uint32_t>(20, 0)).ok());
  ASSERT_TRUE(runner.Prefill(1, 0, k.data(), v.data(), 20, q.data(), 20, &stats).ok());
  bool heads_differ = false;
  for (int step = 0; step <= 12; ++step) {
    std::vector<float> keys, values;
    ASSERT_TRUE(cache->ReadTokens(1, 0, &keys, &values).ok());
    ASSERT_EQ(keys.size(), 11u * 4);
    std::set<int> held[2];
    for (size_t j = 0; j < 11; ++j) {
      for (int h = 0; h < 2; ++h) {
        const int id = static_cast<int>(values[j * 4 + h * 2]);
        EXPECT_EQ(id % 2, h) << "a slot of head " << h << " holds another head's slice";
        EXPECT_NEAR(keys[j * 4 + h * 2 + 1], 0.001f * id, 1e-6f);
        EXPECT_TRUE(held[h].insert(id / 2).second) << "token " << id / 2 << " held twice";
      }
    }
    heads_differ |= held[0] != held[1];
    if (step == 12) break;
    ASSERT_TRUE(cache->AppendTokenIds(1, {1}).ok());
    float kn[4], vn[4], out[8];
    token_kv(20 + step, kn, vn);
    std::vector<float> qs(8);
    for (float& x : qs) x = dist(rng);
    ASSERT_TRUE(runner.DecodeLayer(1, 0, qs.data(), kn, vn, out, nullptr, &stats).ok());
    EXPECT_LE(cache->pool(0).high_water(), 3u);
  }
  EXPECT_TRUE(heads_differ);
}

TEST(TokenEvictionTest, TokenPolicyStaysWithinItsTokenBudgetEveryStep) {
  for (int which = 0; which < 2; ++which) {
    auto h2o = *H2oPolicy::Create({});
    TovaPolicy tova;
    Policy* policy = which == 0 ? static_cast<Policy*>(h2o.get()) : &tova;
    CpuDevice device;
    auto cache = *KvCacheManager::Create(TokenCacheOptions(), &device, policy, nullptr);
    DecodeRunner runner(cache.get(), nullptr);
    ASSERT_TRUE(cache->AddSequence(1, {3}).ok());  // 12 tokens
    std::vector<float> k(40), v(40), q(2);
    for (int i = 0; i < 40; ++i) {
      k[i] = static_cast<float>((i * 7) % 5) - 2.0f;
      v[i] = static_cast<float>(i);
    }
    q = {0.5f, -0.25f};
    StepStats stats;
    ASSERT_TRUE(cache->AppendTokenIds(1, std::vector<uint32_t>(20, 0)).ok());
    ASSERT_TRUE(runner.Prefill(1, 0, k.data(), v.data(), 20, q.data(), 1, &stats).ok());
    EXPECT_EQ(cache->View(1, 0)->n_tokens, 11u) << policy->name();
    for (int step = 0; step < 10; ++step) {
      ASSERT_TRUE(cache->AppendTokenIds(1, {1}).ok());
      std::vector<float> out(2);
      const float kv[2] = {static_cast<float>(step % 3), 1.0f};
      ASSERT_TRUE(runner.DecodeLayer(1, 0, q.data(), kv, kv, out.data(), nullptr, &stats).ok());
      EXPECT_EQ(cache->View(1, 0)->n_tokens, 11u);
      EXPECT_LE(cache->pool(0).high_water(), 3u);
    }
    ASSERT_TRUE(cache->Cancel(1).ok());
    EXPECT_EQ(cache->pool(0).in_use(), 0u);
  }
}

}  // namespace
}  // namespace kvtier::worker
