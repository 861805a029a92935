#include "worker/trace/trace_profiler.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/budget/lukv_allocator.h"
#include "worker/budget/xkv_allocator.h"
#include "worker/trace/trace_gen.h"

namespace kvtier {
namespace {

using ::testing::DoubleNear;
using ::testing::Pointwise;

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name + "." + std::to_string(getpid());
}

// One layer, one head, head_dim 1, prompt of 3 tokens with keys
// (0, ln 2, 0) and values (1, 2, 3); the last prompt query and the one
// decode query are 1, the decode token's key 0 and value 4. With scale
// 1/sqrt(1) the logits are the keys themselves.
std::string HandTrace() {
  const std::string path = TempPath("hand");
  TraceHeader h;
  h.n_layers = 1;
  h.n_q_heads = 1;
  h.n_kv_heads = 1;
  h.head_dim = 1;
  h.prompt_len = 3;
  h.n_prompt_queries = 1;
  h.decode_steps = 1;
  auto w = TraceWriter::Create(path, h);
  EXPECT_TRUE(w.ok());
  TracePromptLayer p;
  p.queries = {1.0f};
  p.keys = {0.0f, static_cast<float>(std::log(2.0)), 0.0f};
  p.values = {1.0f, 2.0f, 3.0f};
  EXPECT_TRUE(w->WritePromptLayer(0, p).ok());
  EXPECT_TRUE(w->WriteStep(0, 0, {{1.0f}, {0.0f}, {4.0f}}).ok());
  EXPECT_TRUE(w->Finish().ok());
  return path;
}

TEST(ProfileXkvTest, HandTraceScoresExactly) {
  const std::string path = HandTrace();
  auto trace = TraceReader::Open(path);
  ASSERT_TRUE(trace.ok());
  // Last query attends (1, 2, 1)/4; the prefix is tokens 0 and 1.
  auto plain = ProfileXkv(*trace, {.window = 1, .kernel = 1});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_THAT(plain->samples[0][0], Pointwise(DoubleNear(1e-7), {0.5, 0.25}));
  // Kernel 3 with zero padding, divided by 3: (0+.25+.5)/3, (.25+.5+0)/3.
  auto pooled = ProfileXkv(*trace, {.window = 1, .kernel = 3});
  ASSERT_TRUE(pooled.ok());
  EXPECT_THAT(pooled->samples[0][0], Pointwise(DoubleNear(1e-7), {0.25, 0.25}));
  EXPECT_EQ(pooled->kernel, 3u);
  EXPECT_EQ(ProfileXkv(*trace, {.window = 2}).status().code(),
            absl::StatusCode::kInvalidArgument);  // one prompt query only
  EXPECT_EQ(ProfileXkv(*trace, {.window = 1, .kernel = 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

TEST(ProfileLukvTest, HandTraceOracleExactly) {
  const std::string path = HandTrace();
  auto trace = TraceReader::Open(path);
  ASSERT_TRUE(trace.ok());
  auto profile = ProfileLukv(*trace, {.n_sink = 0, .window = 1, .kernel = 1});
  ASSERT_TRUE(profile.ok()) << profile.status();
  const LukvCurve& c = profile->samples[0][0];
  EXPECT_EQ(c.length, 3u);
  EXPECT_EQ(c.protected_tokens, 1u);
  // Decode attention over (0, ln 2, 0, 0): (.2, .4, .2, .2). ||v|| / mean:
  // (.5, 1, 1.5). Utilities: token 0 .1, token 1 .4. The scorer ranks token
  // 0 (.25) below token 1 (.5), so token 0 goes first.
  EXPECT_THAT(c.loss, Pointwise(DoubleNear(1e-7), {0.0, 0.1, 0.5}));
  EXPECT_EQ(ProfileLukv(*trace, {.n_sink = 2, .window = 1, .kernel = 1})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);  // nothing evictable
  std::remove(path.c_str());
}

class GeneratedTraceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_.n_layers = 2;
    options_.n_q_heads = 4;
    options_.n_kv_heads = 2;
    options_.head_dim = 32;
    options_.prompt_len = 512;
    options_.n_prompt_queries = 32;
    options_.decode_steps = 4;
    options_.needle_margin = 64;
    options_.seed = 5;
    path_ = TempPath("gen");
    ASSERT_TRUE(GenerateTraceFile(options_, path_).ok());
  }
  void TearDown() override { std::remove(path_.c_str()); }
  TraceGenOptions options_;
  std::string path_;
};

TEST_F(GeneratedTraceTest, XkvProfileFeedsTheAllocator) {
  auto trace = TraceReader::Open(path_);
  ASSERT_TRUE(trace.ok());
  auto profile = ProfileXkv(*trace);
  ASSERT_TRUE(profile.ok()) << profile.status();
  ASSERT_EQ(profile->samples[0].size(), 2u);
  EXPECT_EQ(profile->samples[0][0].size(), 512u - 8u);
  const std::string file = TempPath("xkvprof");
  ASSERT_TRUE(WriteXkvProfile(file, *profile).ok());
  auto read = ReadXkvProfile(file);
  ASSERT_TRUE(read.ok());
  auto xkv = XkvAllocator::Create(*read);
  ASSERT_TRUE(xkv.ok());
  auto a = xkv->Allocate({.n_layers = 2, .n_kv_heads = 2, .total = 128});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->Total(), 128);
  std::remove(file.c_str());
}

TEST_F(GeneratedTraceTest, GqaPoolingAveragesEachGroup) {
  auto trace = TraceReader::Open(path_);
  ASSERT_TRUE(trace.ok());
  auto pooled = ProfileXkv(*trace);
  auto per_query_head = ProfileXkv(*trace, {.pool_gqa = false});
  ASSERT_TRUE(pooled.ok() && per_query_head.ok());
  for (uint32_t l = 0; l < 2; ++l) {
    const std::vector<double>& a = pooled->samples[0][l];
    const std::vector<double>& b = per_query_head->samples[0][l];
    double sum_a = 0, sum_b = 0;
    for (double v : a) sum_a += v;
    for (double v : b) sum_b += v;
    // Group means over G = 2 query heads carry half the total mass.
    EXPECT_NEAR(sum_b, 2 * sum_a, 1e-9 * sum_b);
    // Each window query spreads at most 1 over the prefix: 4 heads x 8.
    EXPECT_LE(sum_b, 32.0);
    EXPECT_GT(sum_b, 0.0);
  }
}

TEST_F(GeneratedTraceTest, LukvOracleValuesTheNeedlesMost) {
  auto gen = TraceGenerator::Create(options_);
  auto trace = TraceReader::Open(path_);
  ASSERT_TRUE(gen.ok() && trace.ok());
  auto profile = ProfileLukv(*trace);
  ASSERT_TRUE(profile.ok()) << profile.status();
  const size_t needles = gen->needle_positions().size();
  for (uint32_t l = 0; l < 2; ++l) {
    for (uint32_t g = 0; g < 2; ++g) {
      const bool hosts_retrieval =
          gen->IsRetrievalHead(l, 2 * g) || gen->IsRetrievalHead(l, 2 * g + 1);
      if (!hosts_retrieval) continue;
      const LukvCurve& c = profile->samples[0][l * 2 + g];
      EXPECT_EQ(c.protected_tokens, 36u);
      std::vector<double> inc;
      for (size_t m = 1; m < c.loss.size(); ++m) {
        inc.push_back(c.loss[m] - c.loss[m - 1]);
      }
      // The oracle values the needles most, far above a typical token
      // (how much each needle draws varies with its position signal), and
      // the scorer, whose window queries retrieve the needles too, ranks
      // them high: the most useful one among its last kernel * needles
      // (avg-pooling spreads a needle's score over its neighbours), all in
      // its top fifth.
      std::vector<size_t> by_value(inc.size());
      for (size_t k = 0; k < inc.size(); ++k) by_value[k] = k;
      std::sort(by_value.begin(), by_value.end(),
                [&](size_t a, size_t b) { return inc[a] > inc[b]; });
      const double median = inc[by_value[inc.size() / 2]];
      EXPECT_GE(by_value[0], inc.size() - 5 * needles) << "layer " << l;
      for (size_t r = 0; r < needles; ++r) {
        EXPECT_GE(by_value[r], inc.size() * 4 / 5) << "layer " << l;
        EXPECT_GT(inc[by_value[r]], 10 * median) << "layer " << l;
      }
    }
  }
  auto table = BuildLukvTable(*profile);
  ASSERT_TRUE(table.ok()) << table.status();
  auto lukv = LukvAllocator::Create(*table);
  ASSERT_TRUE(lukv.ok());
  auto a = lukv->Allocate(
      {.n_layers = 2, .n_kv_heads = 2, .total = 400, .context = 512});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->Total(), 400);
}

TEST_F(GeneratedTraceTest, LukvNeedsDecodeSteps) {
  options_.decode_steps = 0;
  const std::string path = TempPath("nodecode");
  ASSERT_TRUE(GenerateTraceFile(options_, path).ok());
  auto trace = TraceReader::Open(path);
  ASSERT_TRUE(trace.ok());
  EXPECT_EQ(ProfileLukv(*trace).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvtier
