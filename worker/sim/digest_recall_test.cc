#include "worker/sim/digest_recall.h"

#include <cmath>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/policy/window_policy.h"

namespace kvtier::worker {
namespace {

TEST(DigestRecallTest, FindsThePageHoldingTheDominantKey) {
  FullCachePolicy full(kernels::DigestKind::kMinMax);
  CpuDevice device;
  KvCacheOptions o;
  o.layout = PageLayout{.page_size = 4, .n_kv_heads = 1, .head_dim = 4, .dtype = DType::kF32};
  o.n_layers = 1;
  o.n_q_heads = 1;
  o.pool_pages_per_layer = 8;
  auto cache = *KvCacheManager::Create(o, &device, &full, nullptr);
  ASSERT_TRUE(cache->AddSequence(1, {8}).ok());
  // 17 tokens: 4 full pages and one partial; only token 9 (page 2) points
  // along the query.
  std::vector<float> k(17 * 4, 0.0f), v(17 * 4, 1.0f);
  k[9 * 4] = 5.0f;
  k[1 * 4 + 1] = 3.0f;  // orthogonal to the query: no help
  ASSERT_TRUE(cache->AppendTokenIds(1, std::vector<uint32_t>(17, 1)).ok());
  ASSERT_TRUE(cache->AppendKv(1, 0, k.data(), v.data(), 17).ok());
  const float q[4] = {1.0f, 0.0f, 0.0f, 0.0f};
  // lse of q over the 17 keys (scale 1/2): 16 logits of 0 and one of 2.5.
  const float lse = static_cast<float>(std::log(16.0 + std::exp(2.5)));
  const std::vector<uint32_t> ks = {1, 2, 4};
  auto recall = DigestRecallAtK(*cache, 1, 0, q, &lse, ks);
  ASSERT_TRUE(recall.ok()) << recall.status();
  // k = 4 covers every full page: nothing to choose.
  EXPECT_THAT(*recall, ::testing::ElementsAre(1.0, 1.0, -1.0));
  // A query pointing away from the key ranks page 2 last by digest and by
  // truth alike; with k = 1 the tie among the others goes to page 0.
  const float away[4] = {-1.0f, 0.0f, 0.0f, 0.0f};
  const float lse_away = static_cast<float>(std::log(16.0 + std::exp(-2.5)));
  auto recall_away = DigestRecallAtK(*cache, 1, 0, away, &lse_away, {1});
  ASSERT_TRUE(recall_away.ok());
  EXPECT_THAT(*recall_away, ::testing::ElementsAre(1.0));
}

}  // namespace
}  // namespace kvtier::worker
