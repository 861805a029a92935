// Token-level policies (H2O, TOVA; worker/policy/token_policy.h) and the
// cache's token eviction (KvCacheManager::EvictTokens / EvictHeadTokens)
// that carries out their decisions.
#include <cstring>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/policy/token_policy.h"

namespace kvtier::worker {
namespace {

using ::testing::ElementsAre;

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
