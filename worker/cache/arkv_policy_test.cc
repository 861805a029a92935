#include "worker/policy/arkv_policy.h"

#include <algorithm>
#include <iterator>
#include <numeric>
#include <random>
#include <set>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"

namespace kvtier::worker {
namespace {

using ::testing::ElementsAre;

TEST(AvgPool1dTest, CountsZeroPaddingLikeTorch) {
  const std::vector<float> out = AvgPool1d({5, 0, 0, 0, 10}, 5);
  EXPECT_THAT(out, ElementsAre(1.0f, 1.0f, 3.0f, 2.0f, 2.0f));
}

ArkvOptions HarnessOptions(bool at_cost, uint32_t score_rows, bool per_kv_head) {
  ArkvOptions a;
  a.window = 4;
  a.count_quantized_at_cost = at_cost;
  a.score_rows = score_rows;
  a.per_kv_head = per_kv_head;
  return a;
}

struct ArkvHarness {
  explicit ArkvHarness(uint32_t budget_pages, uint32_t n_layers = 1, bool at_cost = false,
                       DType dtype = DType::kF16, uint32_t score_rows = 0,
                       bool per_kv_head = false)
      : ArkvHarness(budget_pages, n_layers, dtype,
                    HarnessOptions(at_cost, score_rows, per_kv_head)) {}
  ArkvHarness(uint32_t budget_pages, uint32_t n_layers, DType dtype, const ArkvOptions& a) {
    policy = *ArkvPolicy::Create(a);
    KvCacheOptions o;
    o.layout = PageLayout{.page_size = 4, .n_kv_heads = 2, .head_dim = 8, .dtype = dtype};
    o.n_layers = n_layers;
    o.n_q_heads = 4;
    o.pool_pages_per_layer = budget_pages;
    cache = *KvCacheManager::Create(o, &device, policy.get(), nullptr);
    runner = std::make_unique<DecodeRunner>(cache.get(), nullptr);
    EXPECT_TRUE(cache->AddSequence(1, std::vector<uint32_t>(n_layers, budget_pages)).ok());
  }
  std::vector<float> Random(size_t n) {
    std::normal_distribution<float> dist;
    std::vector<float> out(n);
    for (float& x : out) x = dist(rng);
    return out;
  }
  absl::Status Prefill(uint32_t n, uint32_t n_queries) {
    if (absl::Status s = cache->AppendTokenIds(1, std::vector<uint32_t>(n, 3)); !s.ok()) return s;
    for (uint32_t l = 0; l < cache->options().n_layers; ++l) {
      std::vector<float> k = Random(n * 16), v = Random(n * 16), q = Random(n_queries * 32);
      absl::Status s = runner->Prefill(1, l, k.data(), v.data(), n, q.data(), n_queries, &stats);
      if (!s.ok()) return s;
    }
    return absl::OkStatus();
  }
  absl::Status Step(std::vector<float>* out = nullptr) {
    if (absl::Status s = cache->AppendTokenIds(1, {4}); !s.ok()) return s;
    for (uint32_t l = 0; l < cache->options().n_layers; ++l) {
      std::vector<float> q = Random(32), k = Random(16), v = Random(16), o(32);
      absl::Status s = runner->DecodeLayer(1, l, q.data(), k.data(), v.data(), o.data(), nullptr,
                                           &stats);
      if (!s.ok()) return s;
      if (out != nullptr) *out = o;
    }
    return absl::OkStatus();
  }

  std::mt19937 rng{5};
  CpuDevice device;
  std::unique_ptr<ArkvPolicy> policy;
  std::unique_ptr<KvCacheManager> cache;
  std::unique_ptr<DecodeRunner> runner;
  StepStats stats;
};

TEST(ArkvPolicyTest, OverflowSplitsTokensIntoFullQuantizedAndEvicted) {
  ArkvHarness h(5);  // 20 slots: cache_size 19, window 4
  ASSERT_TRUE(h.Prefill(19, 8).ok());
  EXPECT_EQ(h.cache->View(1, 0)->n_tokens, 19u);
  EXPECT_GT(h.policy->OqScore(1, 0), 0.0);
  ASSERT_TRUE(h.Step().ok());
  // 20 tokens > 19: past = 16, keep = 12; one layer so rho = 1 and
  // origin_budget = 15, full precision = min(15 - 4, 12) = 11 + window 4.
  EXPECT_EQ(h.cache->View(1, 0)->n_tokens, 15u);
  EXPECT_EQ(h.policy->QuantizedTokens(1, 0), 1u);
  std::vector<uint32_t> fp = h.policy->FullPrecisionPositions(1, 0);
  std::vector<uint32_t> qt = h.policy->QuantizedPositions(1, 0);
  // The window (positions 16..19) stays in full precision.
  for (uint32_t p = 16; p < 20; ++p) EXPECT_NE(std::find(fp.begin(), fp.end(), p), fp.end());
  std::set<uint32_t> all(fp.begin(), fp.end());
  all.insert(qt.begin(), qt.end());
  EXPECT_EQ(all.size(), 16u);  // disjoint tiers, 4 tokens evicted
  // One fp8 page of 4 tokens: elements 2*4*2*8 bytes + scales 2*4*2*4 bytes.
  EXPECT_EQ(h.policy->QuantizedBytes(1, 0), 128u + 64u);
  EXPECT_EQ(h.policy->own_layer_kv_bytes(0), 128u + 64u);
  EXPECT_EQ(h.policy->own_layer_kv_bytes(1), 0u);  // no such layer
}

TEST(ArkvPolicyTest, OwnBytesAreCountedPerLayer) {
  ArkvHarness h(5, /*n_layers=*/2);
  ASSERT_TRUE(h.Prefill(19, 8).ok());
  EXPECT_EQ(h.policy->own_layer_kv_bytes(0), 0u);
  ASSERT_TRUE(h.Step().ok());  // both layers overflow: one fp8 page each
  EXPECT_EQ(h.policy->own_layer_kv_bytes(0), 128u + 64u);
  EXPECT_EQ(h.policy->own_layer_kv_bytes(1), 128u + 64u);
}

// Counting a quantized token at its bytes (an fp8 page with scales, 192 B,
// against an fp32 page's 512: c = 0.375) keeps more quantized tokens, and
// both tiers in whole pages never exceed the pool's 5 pages.
TEST(ArkvPolicyTest, CountingQuantizedTokensAtTheirCostKeepsMoreOfThem) {
  ArkvHarness tokens(5, 1, /*at_cost=*/false, DType::kF32);
  ArkvHarness bytes(5, 1, /*at_cost=*/true, DType::kF32);
  ASSERT_TRUE(tokens.Prefill(19, 8).ok());
  ASSERT_TRUE(bytes.Prefill(19, 8).ok());
  // At cost the tiers may hold 20 - 4 - 0.375 * 3 = 14.875 token units
  // (14 whole). The prompt splits as an overflow does: origin_budget
  // round(1 * (14 - 4)) = 10 gives 10 - 4 = 6 full-precision keys and the
  // window of 4, then floor((14 - 4 - 6) / 0.375) = 10 quantized allowed,
  // of which the 9 other keys use 9: the whole prompt is held. The
  // authors' rule keeps all 19 in full precision, quantizing none.
  EXPECT_EQ(tokens.cache->View(1, 0)->n_tokens, 19u);
  EXPECT_EQ(tokens.policy->QuantizedTokens(1, 0), 0u);
  EXPECT_EQ(bytes.cache->View(1, 0)->n_tokens, 10u);
  EXPECT_EQ(bytes.policy->QuantizedTokens(1, 0), 9u);
  std::set<uint32_t> held;
  for (uint32_t p : bytes.policy->FullPrecisionPositions(1, 0)) held.insert(p);
  for (uint32_t p : bytes.policy->QuantizedPositions(1, 0)) held.insert(p);
  EXPECT_EQ(held.size(), 19u);
  for (uint32_t p = 15; p < 19; ++p) {
    const std::vector<uint32_t> fp = bytes.policy->FullPrecisionPositions(1, 0);
    EXPECT_NE(std::find(fp.begin(), fp.end(), p), fp.end()) << "window position " << p;
  }
  ASSERT_TRUE(tokens.Step().ok());
  ASSERT_TRUE(bytes.Step().ok());
  // The authors' rule: past 16, keep 12, 11 of them full precision, 1
  // quantized. At cost: 11 + 0.375 * 9 = 14.375 > 14; past 16 (7 full
  // precision, 9 quantized) costs 10.375, survivors worth 7.78: full
  // precision min(10 - 4, 7) = 6, then floor(1.78 / 0.375) = 4 quantized.
  EXPECT_EQ(tokens.cache->View(1, 0)->n_tokens, 15u);
  EXPECT_EQ(tokens.policy->QuantizedTokens(1, 0), 1u);
  EXPECT_EQ(bytes.cache->View(1, 0)->n_tokens, 10u);
  EXPECT_EQ(bytes.policy->QuantizedTokens(1, 0), 4u);
  uint32_t most_tokens = 0, most_bytes = 0;
  for (int step = 0; step < 40; ++step) {
    ASSERT_TRUE(tokens.Step().ok());
    ASSERT_TRUE(bytes.Step().ok());
    const uint32_t full = bytes.cache->View(1, 0)->n_tokens;
    const uint32_t quantized = bytes.policy->QuantizedTokens(1, 0);
    EXPECT_LE(full + 0.375 * quantized, 14.875) << "step " << step;
    EXPECT_EQ(bytes.policy->own_layer_kv_bytes(0), (quantized + 3) / 4 * 192u);
    EXPECT_LE((full + 1 + 3) / 4 * 512u + (quantized + 3) / 4 * 192u, 5u * 512u)
        << "step " << step;
    EXPECT_LE(tokens.cache->View(1, 0)->n_tokens + tokens.policy->QuantizedTokens(1, 0), 19u);
    most_tokens = std::max(most_tokens, tokens.policy->QuantizedTokens(1, 0));
    most_bytes = std::max(most_bytes, quantized);
  }
  EXPECT_GT(most_bytes, most_tokens);
}

// With score_rows = 1 the prompt keeps the keys the last prompt query
// attends to most (softmax per head over every key, summed over the query
// heads of each KV head, or of the layer when shared, pooled), plus the
// window; the authors' window statistics keep others.
TEST(ArkvPolicyTest, ScoreRowsOneRanksThePromptByTheLastQuery) {
  constexpr uint32_t kN = 30, kQueries = 8, kHeads = 4, kDim = 8, kWindow = 4;
  // A narrow pool: over 26 tokens the default one's would smooth the heads'
  // choices into the same run.
  constexpr uint32_t kPool = 5;
  auto options = [&](uint32_t score_rows, bool per_kv_head) {
    ArkvOptions a = HarnessOptions(false, score_rows, per_kv_head);
    a.pool_kernel = kPool;
    return a;
  };
  ArkvHarness last(5, 1, DType::kF16, options(1, true));
  ArkvHarness shared(5, 1, DType::kF16, options(1, false));
  ArkvHarness window(5, 1, DType::kF16, options(0, false));
  std::vector<float> k = last.Random(kN * 16), v = last.Random(kN * 16);
  std::vector<float> q = last.Random(kQueries * 32);
  for (ArkvHarness* h : {&last, &shared, &window}) {
    ASSERT_TRUE(h->cache->AppendTokenIds(1, std::vector<uint32_t>(kN, 3)).ok());
    ASSERT_TRUE(h->runner->Prefill(1, 0, k.data(), v.data(), kN, q.data(), kQueries, &h->stats)
                    .ok());
  }
  const uint32_t nw = kN - kWindow;
  const float* q_last = q.data() + size_t{kQueries - 1} * kHeads * kDim;
  // The positions kept when query heads [first, end) rank the prompt.
  auto kept_by = [&](uint32_t first, uint32_t end) {
    std::vector<float> mass(nw, 0.0f);
    for (uint32_t h = first; h < end; ++h) {
      std::vector<double> logit(kN);
      double top = -1e30, sum = 0;
      for (uint32_t j = 0; j < kN; ++j) {
        double dot = 0;
        for (uint32_t c = 0; c < kDim; ++c) {
          dot += q_last[h * kDim + c] * k[(size_t{j} * 2 + h / 2) * kDim + c];
        }
        logit[j] = dot / std::sqrt(static_cast<double>(kDim));
        top = std::max(top, logit[j]);
      }
      for (double l : logit) sum += std::exp(l - top);
      for (uint32_t j = 0; j < nw; ++j) {
        mass[j] += static_cast<float>(std::exp(logit[j] - top) / sum);
      }
    }
    const std::vector<float> pooled = AvgPool1d(mass, kPool);
    std::vector<uint32_t> order(nw);
    std::iota(order.begin(), order.end(), 0u);
    std::stable_sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return pooled[a] != pooled[b] ? pooled[a] > pooled[b] : a > b;
    });
    std::vector<uint32_t> want(order.begin(), order.begin() + (19 - kWindow));
    for (uint32_t j = nw; j < kN; ++j) want.push_back(j);
    std::sort(want.begin(), want.end());
    return want;
  };
  EXPECT_EQ(last.policy->FullPrecisionPositions(1, 0, 0), kept_by(0, 2));
  EXPECT_EQ(last.policy->FullPrecisionPositions(1, 0, 1), kept_by(2, 4));
  EXPECT_NE(kept_by(0, 2), kept_by(2, 4));
  EXPECT_EQ(shared.policy->FullPrecisionPositions(1, 0, 0), kept_by(0, 4));
  EXPECT_EQ(shared.policy->FullPrecisionPositions(1, 0, 1), kept_by(0, 4));
  EXPECT_EQ(window.policy->FullPrecisionPositions(1, 0).size(), 19u);
  EXPECT_NE(window.policy->FullPrecisionPositions(1, 0), kept_by(0, 2));
}

// A key spans several tokens, but the query that reads it may peak on one
// of them: the pooled score keeps the pool_kernel tokens centred on the
// peak, the whole span for the default width and only its middle for the
// authors' 5.
TEST(ArkvPolicyTest, ThePoolKeepsTheTokensAroundAPeak) {
  constexpr uint32_t kN = 80, kQueries = 8, kHeads = 4, kDim = 8, kPeak = 40, kWide = 21;
  // A cache of the window and kWide more tokens, in pages of 4.
  constexpr uint32_t kWindow = 6, kPages = (kWide + kWindow + 1) / 4;
  static_assert((kWide + kWindow + 1) % 4 == 0);
  EXPECT_EQ(ArkvOptions().pool_kernel, kWide);
  for (uint32_t kernel : {kWide, 5u}) {
    ArkvOptions a = HarnessOptions(false, /*score_rows=*/1, false);
    a.window = kWindow;
    a.pool_kernel = kernel;
    ArkvHarness h(kPages, 1, DType::kF16, a);
    std::vector<float> k = h.Random(kN * 16), v = h.Random(kN * 16);
    std::vector<float> q = h.Random(kQueries * kHeads * kDim);
    for (float& x : k) x *= 0.01f;  // every key but the peak's barely read
    float* q_last = q.data() + size_t{kQueries - 1} * kHeads * kDim;
    std::fill(q_last, q_last + kHeads * kDim, 1.0f);
    std::fill(k.begin() + kPeak * 16, k.begin() + (kPeak + 1) * 16, 4.0f);
    ASSERT_TRUE(h.cache->AppendTokenIds(1, std::vector<uint32_t>(kN, 3)).ok());
    ASSERT_TRUE(
        h.runner->Prefill(1, 0, k.data(), v.data(), kN, q.data(), kQueries, &h.stats).ok());
    const std::vector<uint32_t> kept = h.policy->FullPrecisionPositions(1, 0);
    ASSERT_EQ(kept.size(), kWide + kWindow) << kernel;
    const uint32_t half = kernel / 2;
    for (uint32_t j = kPeak - half; j <= kPeak + half; ++j) {
      EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), j)) << kernel << " " << j;
    }
    for (uint32_t j = kN - kWindow; j < kN; ++j) {
      EXPECT_TRUE(std::binary_search(kept.begin(), kept.end(), j)) << kernel << " " << j;
    }
    uint32_t around = 0;  // kept within kWide / 2 of the peak
    for (uint32_t j : kept) around += j + kWide / 2 >= kPeak && j <= kPeak + kWide / 2 ? 1 : 0;
    if (kernel == kWide) {
      EXPECT_EQ(around, kWide);
    } else {
      EXPECT_LT(around, kWide);
    }
  }
}

// Per KV head, each tier holds that head's slices of the tokens its
// positions name (within fp8's rounding: a token once quantized keeps its
// dequantized values when it regains full precision); the heads come to
// keep different tokens.
TEST(ArkvPolicyTest, EachKvHeadHoldsTheTokensItsPositionsName) {
  for (bool per_kv_head : {true, false}) {
    ArkvHarness h(5, 1, false, DType::kF32, 0, per_kv_head);
    // Every key and value written, by position: [position][2][8].
    std::vector<float> keys, values;
    const uint32_t n = 40;
    keys = h.Random(n * 16);
    values = h.Random(n * 16);
    std::vector<float> q = h.Random(8 * 32);
    ASSERT_TRUE(h.cache->AppendTokenIds(1, std::vector<uint32_t>(n, 3)).ok());
    ASSERT_TRUE(
        h.runner->Prefill(1, 0, keys.data(), values.data(), n, q.data(), 8, &h.stats).ok());
    bool heads_differ = false;
    for (int step = 0; step < 12; ++step) {
      for (uint32_t g = 0; g < 2; ++g) {
        const std::vector<uint32_t> fp = h.policy->FullPrecisionPositions(1, 0, g);
        const std::vector<uint32_t> qt = h.policy->QuantizedPositions(1, 0, g);
        heads_differ |= fp != h.policy->FullPrecisionPositions(1, 0, 1 - g);
        std::vector<float> k, v;
        ASSERT_TRUE(h.cache->ReadTokens(1, 0, &k, &v).ok());
        ASSERT_EQ(k.size(), fp.size() * 16);
        // fp8 e4m3 keeps 3 mantissa bits: within 1/16 of the value, or of
        // the scale's step for small ones.
        auto near = [](float want) { return 0.0625 * std::abs(want) + 0.02; };
        for (size_t j = 0; j < fp.size(); ++j) {
          for (uint32_t c = 0; c < 8; ++c) {
            const float want_k = keys[fp[j] * 16 + g * 8 + c];
            const float want_v = values[fp[j] * 16 + g * 8 + c];
            ASSERT_NEAR(k[j * 16 + g * 8 + c], want_k, near(want_k)) << "step " << step;
            ASSERT_NEAR(v[j * 16 + g * 8 + c], want_v, near(want_v)) << "step " << step;
          }
        }
        const AuxKv aux = h.policy->Auxiliary(1, 0);
        const auto* pages = static_cast<const uint8_t*>(aux.pool);
        for (size_t j = 0; j < qt.size(); ++j) {
          const uint8_t* page = pages + (j / 4) * aux.page_stride_bytes;
          for (uint32_t c = 0; c < 8; ++c) {
            const size_t e = (j % 4) * 16 + g * 8 + c;
            const float want = keys[qt[j] * 16 + g * 8 + c];
            ASSERT_NEAR(kernels::LoadAsFloat(page, kernels::ScalarType::kF32, e), want,
                        near(want))
                << "step " << step;
          }
        }
      }
      ASSERT_EQ(h.policy->FullPrecisionPositions(1, 0, 0).size(),
                h.policy->FullPrecisionPositions(1, 0, 1).size());
      std::vector<float> qs = h.Random(32), kn = h.Random(16), vn = h.Random(16), out(32);
      std::copy(kn.begin(), kn.end(), std::back_inserter(keys));
      std::copy(vn.begin(), vn.end(), std::back_inserter(values));
      ASSERT_TRUE(h.cache->AppendTokenIds(1, {4}).ok());
      ASSERT_TRUE(h.runner
                      ->DecodeLayer(1, 0, qs.data(), kn.data(), vn.data(), out.data(), nullptr,
                                    &h.stats)
                      .ok());
    }
    EXPECT_GT(h.policy->QuantizedTokens(1, 0), 0u);
    EXPECT_EQ(heads_differ, per_kv_head);
  }
}

TEST(ArkvPolicyTest, StaysWithinThePoolOverManySteps) {
  ArkvHarness h(5);
  ASSERT_TRUE(h.Prefill(40, 8).ok());  // longer than the cache: top 15 + window
  EXPECT_EQ(h.cache->View(1, 0)->n_tokens, 19u);
  for (int step = 0; step < 30; ++step) {
    ASSERT_TRUE(h.Step().ok());
    const uint32_t total =
        h.cache->View(1, 0)->n_tokens + h.policy->QuantizedTokens(1, 0);
    EXPECT_LE(total, 19u);
    EXPECT_LE(h.cache->pool(0).high_water(), 5u);
  }
  EXPECT_GT(h.policy->QuantizedTokens(1, 0), 0u);
  EXPECT_EQ(h.policy->own_layer_kv_bytes(0), h.policy->QuantizedBytes(1, 0));
  ASSERT_TRUE(h.cache->Cancel(1).ok());
  EXPECT_EQ(h.policy->QuantizedTokens(1, 0), 0u);
  EXPECT_EQ(h.policy->own_layer_kv_bytes(0), 0u);
  EXPECT_EQ(h.cache->pool(0).in_use(), 0u);
}

// Attention of a step equals a softmax over the full-precision tier (read
// back from the pool), the new token and the dequantized tier.
TEST(ArkvPolicyTest, AttentionCoversBothTiers) {
  ArkvHarness h(5);
  ASSERT_TRUE(h.Prefill(19, 8).ok());
  ASSERT_TRUE(h.Step().ok());  // rebuild: 15 full precision + 1 quantized
  ASSERT_EQ(h.policy->QuantizedTokens(1, 0), 1u);
  std::vector<float> keys, values;
  ASSERT_TRUE(h.cache->ReadTokens(1, 0, &keys, &values).ok());
  const AuxKv aux = h.policy->Auxiliary(1, 0);
  ASSERT_EQ(aux.n_pages, 1u);
  ASSERT_EQ(aux.last_page_len, 1);
  const auto* page = static_cast<const uint8_t*>(aux.pool);
  for (int e = 0; e < 16; ++e) {
    keys.push_back(kernels::LoadAsFloat(page, kernels::ScalarType::kF16, e));
    values.push_back(kernels::LoadAsFloat(page, kernels::ScalarType::kF16, 64 + e));
  }
  std::vector<float> q = h.Random(32), k = h.Random(16), v = h.Random(16), out(32);
  for (int e = 0; e < 16; ++e) {
    keys.push_back(kernels::HalfToFloat(kernels::FloatToHalf(k[e])));
    values.push_back(kernels::HalfToFloat(kernels::FloatToHalf(v[e])));
  }
  ASSERT_TRUE(h.cache->AppendTokenIds(1, {4}).ok());
  ASSERT_TRUE(
      h.runner->DecodeLayer(1, 0, q.data(), k.data(), v.data(), out.data(), nullptr, &h.stats)
          .ok());
  const size_t n = keys.size() / 16;  // 17 tokens
  ASSERT_EQ(n, 17u);
  for (int head = 0; head < 4; ++head) {
    const int g = head / 2;
    std::vector<double> logit(n);
    double max_logit = -1e30;
    for (size_t j = 0; j < n; ++j) {
      double dot = 0;
      for (int c = 0; c < 8; ++c) dot += double(q[head * 8 + c]) * keys[j * 16 + g * 8 + c];
      logit[j] = dot / std::sqrt(8.0);
      max_logit = std::max(max_logit, logit[j]);
    }
    double sum = 0;
    for (size_t j = 0; j < n; ++j) sum += std::exp(logit[j] - max_logit);
    for (int c = 0; c < 8; ++c) {
      double expect = 0;
      for (size_t j = 0; j < n; ++j) {
        expect += std::exp(logit[j] - max_logit) / sum * values[j * 16 + g * 8 + c];
      }
      EXPECT_NEAR(out[head * 8 + c], expect, 1e-4) << "head " << head << " channel " << c;
    }
  }
}

TEST(ArkvPolicyTest, LayerWithLowerOqKeepsFewerTokensInFullPrecision) {
  ArkvHarness h(5, 2);
  ASSERT_TRUE(h.Prefill(19, 8).ok());
  ASSERT_TRUE(h.Step().ok());
  const double oq0 = h.policy->OqScore(1, 0), oq1 = h.policy->OqScore(1, 1);
  ASSERT_NE(oq0, oq1);
  const uint32_t low = oq0 < oq1 ? 0 : 1;
  const uint32_t high = 1 - low;
  // The layer with the largest OQ has rho = 1: 11 + 4 in full precision.
  EXPECT_EQ(h.cache->View(1, high)->n_tokens, 15u);
  const double rho = std::min(oq0, oq1) / std::max(oq0, oq1);
  const int64_t budget = std::lround(rho * 15);
  const uint32_t expected_fp = static_cast<uint32_t>(std::clamp<int64_t>(budget - 4, 0, 12));
  EXPECT_EQ(h.cache->View(1, low)->n_tokens, expected_fp + 4);
  EXPECT_EQ(h.policy->QuantizedTokens(1, low), 12 - expected_fp);
}

TEST(ArkvPolicyTest, RejectsBadOptions) {
  ArkvOptions o;
  o.pool_kernel = 4;
  EXPECT_EQ(ArkvPolicy::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = ArkvOptions();
  o.keep_fraction = 0;
  EXPECT_EQ(ArkvPolicy::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  o = ArkvOptions();
  o.quant_type = kernels::ScalarType::kF16;
  EXPECT_EQ(ArkvPolicy::Create(o).status().code(), absl::StatusCode::kInvalidArgument);
  ArkvHarness h(1);  // 3 tokens: nothing beyond a window of 4
  EXPECT_EQ(h.Prefill(2, 1).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::worker
