#include "worker/simulator.h"

#include "gtest/gtest.h"

namespace kvtier::worker {
namespace {

std::unique_ptr<TraceSource> SmallTrace() {
  TraceGenOptions g;
  g.n_layers = 3;
  g.n_q_heads = 4;
  g.n_kv_heads = 2;
  g.head_dim = 32;
  g.prompt_len = 512;
  g.n_prompt_queries = 4;
  g.decode_steps = 8;
  g.needle_margin = 64;
  g.local_window = 32;
  auto gen = TraceGenerator::Create(g);
  EXPECT_TRUE(gen.ok()) << gen.status();
  return SyntheticTraceSource(*std::move(gen));
}

SimOptions Options(const std::string& policy, uint32_t budget) {
  SimOptions o;
  o.policy = policy;
  o.page_size = 16;
  o.budget_pages = budget;
  o.arkvale.topk_pages = 6;
  o.arkvale.n_unlimited_layers = 1;
  return o;
}

TEST(SimulatorTest, ArkvaleWithBudgetCoveringContextMatchesFullCacheExactly) {
  auto source = SmallTrace();
  auto report = RunSimulation(*source, Options("arkvale", 40));  // 520 tokens = 33 pages
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->mean_rel_error, 0.0);
  EXPECT_EQ(report->max_rel_error, 0.0);
  EXPECT_EQ(report->stats.pages_recalled, 0u);
  EXPECT_EQ(report->stats.steps, 8u * 3);
  // Every full page of every layer was backed up: 520 / 16 = 32 per layer.
  EXPECT_EQ(report->counters.pages_backed_up, 3u * 32);
}

TEST(SimulatorTest, BudgetedPoliciesStayWithinBudgetAndDriftFromFullCache) {
  auto source = SmallTrace();
  for (const char* policy : {"arkvale", "streaming_llm", "sliding_window", "h2o", "tova"}) {
    SimOptions o = Options(policy, 8);
    o.arkvale.n_unlimited_layers = 0;
    auto report = RunSimulation(*source, o);
    ASSERT_TRUE(report.ok()) << policy << ": " << report.status();
    EXPECT_LE(report->max_pages_in_use, 8u) << policy;
    EXPECT_GT(report->mean_rel_error, 0.0) << policy;
  }
  auto quest = RunSimulation(*source, Options("quest", 8));
  ASSERT_TRUE(quest.ok());
  EXPECT_GT(quest->mean_rel_error, 0.0);
  // Quest keeps the whole cache but attends 8 pages on its sparse layers.
  EXPECT_EQ(quest->max_pages_in_use, 33u);
}

TEST(SimulatorTest, RejectsBadOptions) {
  auto source = SmallTrace();
  EXPECT_EQ(RunSimulation(*source, Options("lru", 8)).status().code(),
            absl::StatusCode::kInvalidArgument);
  SimOptions o = Options("arkvale", 8);
  o.layer_budget_pages = {8, 8};
  EXPECT_EQ(RunSimulation(*source, o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options("arkvale", 0);
  EXPECT_EQ(RunSimulation(*source, o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::worker
