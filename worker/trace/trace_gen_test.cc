#include "worker/trace/trace_gen.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

TraceGenOptions SmallOptions() {
  TraceGenOptions o;
  o.n_layers = 2;
  o.n_q_heads = 4;
  o.n_kv_heads = 2;
  o.head_dim = 32;
  o.prompt_len = 1024;
  o.n_prompt_queries = 8;
  o.decode_steps = 4;
  o.seed = 42;
  o.n_needles = 3;
  return o;
}

// Exact softmax(q.k / sqrt(d)) of the query of `q_head` at `pos` over keys
// 0..pos of its KV head.
std::vector<double> Attention(const TraceGenerator& gen, uint32_t layer,
                              uint32_t q_head, uint32_t pos) {
  const TraceGenOptions& o = gen.options();
  const uint32_t d = o.head_dim;
  std::vector<float> q(d), k(d);
  gen.Query(layer, q_head, pos, q.data());
  const uint32_t g = q_head / (o.n_q_heads / o.n_kv_heads);
  std::vector<double> logits(pos + 1);
  for (uint32_t j = 0; j <= pos; ++j) {
    gen.Key(layer, g, j, k.data());
    double dot = 0;
    for (uint32_t c = 0; c < d; ++c) dot += double{q[c]} * k[c];
    logits[j] = dot / std::sqrt(static_cast<double>(d));
  }
  const double mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (double& v : logits) sum += (v = std::exp(v - mx));
  for (double& v : logits) v /= sum;
  return logits;
}

TEST(TraceGenTest, DeterministicBySeed) {
  auto a = TraceGenerator::Create(SmallOptions());
  auto b = TraceGenerator::Create(SmallOptions());
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->PromptLayer(1).keys, b->PromptLayer(1).keys);
  EXPECT_EQ(a->Step(3, 0).query, b->Step(3, 0).query);
  EXPECT_EQ(a->needle_positions(), b->needle_positions());
  TraceGenOptions other = SmallOptions();
  other.seed = 43;
  auto c = TraceGenerator::Create(other);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(a->PromptLayer(1).keys, c->PromptLayer(1).keys);
  EXPECT_NE(a->Step(3, 0).value, c->Step(3, 0).value);
}

TEST(TraceGenTest, StructureCountsMatchOptions) {
  auto gen = TraceGenerator::Create(SmallOptions());
  ASSERT_TRUE(gen.ok());
  const auto& needles = gen->needle_positions();
  ASSERT_EQ(needles.size(), 3u);
  for (uint32_t p : needles) {
    EXPECT_GE(p, 4u);
    EXPECT_LT(p, 1024u - 256u);
  }
  for (uint32_t l = 0; l < 2; ++l) {
    int n = 0;
    for (uint32_t h = 0; h < 4; ++h) n += gen->IsRetrievalHead(l, h);
    EXPECT_EQ(n, 1);
  }
}

TEST(TraceGenTest, RetrievalHeadsPutTheirTopAttentionOnTheNeedles) {
  auto gen = TraceGenerator::Create(SmallOptions());
  ASSERT_TRUE(gen.ok());
  const std::vector<uint32_t>& needles = gen->needle_positions();
  for (uint32_t l = 0; l < 2; ++l) {
    for (uint32_t h = 0; h < 4; ++h) {
      if (!gen->IsRetrievalHead(l, h)) continue;
      for (uint32_t step = 0; step < 4; ++step) {
        const std::vector<double> p = Attention(*gen, l, h, 1024 + step);
        std::vector<uint32_t> order(p.size());
        std::iota(order.begin(), order.end(), 0);
        std::partial_sort(order.begin(), order.begin() + needles.size(),
                          order.end(),
                          [&](uint32_t a, uint32_t b) { return p[a] > p[b]; });
        std::vector<uint32_t> top(order.begin(),
                                  order.begin() + needles.size());
        std::sort(top.begin(), top.end());
        EXPECT_EQ(top, needles) << "layer " << l << " head " << h;
      }
    }
  }
}

TEST(TraceGenTest, SinksDrawHighMassInOrdinaryHeads) {
  auto gen = TraceGenerator::Create(SmallOptions());
  ASSERT_TRUE(gen.ok());
  for (uint32_t l = 0; l < 2; ++l) {
    for (uint32_t h = 0; h < 4; ++h) {
      if (gen->IsRetrievalHead(l, h)) continue;
      const std::vector<double> p = Attention(*gen, l, h, 1024);
      const double sink_mass = p[0] + p[1] + p[2] + p[3];
      // Uniform attention would give them 4 / 1025.
      EXPECT_GT(sink_mass, 0.3) << "layer " << l << " head " << h;
    }
  }
}

TEST(TraceGenTest, RecentKeysOutweighDistantOnes) {
  TraceGenOptions o = SmallOptions();
  o.sink_logit = 0;  // look at the position signal alone
  auto gen = TraceGenerator::Create(o);
  ASSERT_TRUE(gen.ok());
  for (uint32_t h = 0; h < 4; ++h) {
    if (gen->IsRetrievalHead(0, h)) continue;
    const uint32_t pos = 1024;
    const std::vector<double> p = Attention(*gen, 0, h, pos);
    double recent = 0, distant = 0;
    for (uint32_t j = pos - 15; j <= pos; ++j) recent += p[j] / 16;
    for (uint32_t j = 4; j < pos - 256; ++j) distant += p[j] / (pos - 260);
    EXPECT_GT(recent, 10 * distant) << "head " << h;
  }
}

TEST(TraceGenTest, FileHoldsExactlyTheGeneratedRecords) {
  TraceGenOptions o = SmallOptions();
  o.prompt_len = 300;
  o.needle_margin = 64;
  const std::string path =
      ::testing::TempDir() + "/gen." + std::to_string(getpid());
  ASSERT_TRUE(GenerateTraceFile(o, path).ok());
  auto gen = TraceGenerator::Create(o);
  auto reader = TraceReader::Open(path);
  ASSERT_TRUE(gen.ok() && reader.ok());
  EXPECT_EQ(reader->header(), gen->header());
  TracePromptLayer prompt;
  ASSERT_TRUE(reader->ReadPromptLayer(1, &prompt).ok());
  EXPECT_EQ(prompt.queries, gen->PromptLayer(1).queries);
  EXPECT_EQ(prompt.values, gen->PromptLayer(1).values);
  TraceStep step;
  ASSERT_TRUE(reader->ReadStep(2, 1, &step).ok());
  EXPECT_EQ(step.key, gen->Step(2, 1).key);
  // The step's query is the prompt-query function continued in position.
  std::vector<float> q(o.head_dim);
  gen->Query(1, 3, o.prompt_len + 2, q.data());
  EXPECT_TRUE(std::equal(q.begin(), q.end(), step.query.begin() + 3 * 32));
  std::remove(path.c_str());
}

TEST(TraceGenTest, RejectsOptionsThatDoNotFit) {
  TraceGenOptions o = SmallOptions();
  o.head_dim = 18;  // needs 3 + 2 * 8
  EXPECT_EQ(TraceGenerator::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = SmallOptions();
  o.needle_margin = 1020;
  EXPECT_EQ(TraceGenerator::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = SmallOptions();
  o.n_retrieval_heads = 5;
  EXPECT_EQ(TraceGenerator::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = SmallOptions();
  o.noise_logit = -1;
  EXPECT_EQ(TraceGenerator::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = SmallOptions();
  o.n_kv_heads = 3;
  EXPECT_EQ(TraceGenerator::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o = SmallOptions();
  o.n_sink_tokens = 1024;
  EXPECT_EQ(TraceGenerator::Create(o).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
