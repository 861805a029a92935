#include "worker/sim/simulator.h"

#include <unistd.h>

#include <cstdio>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/budget/profile.h"

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
  o.recall_ks = {1, 8};
  return o;
}

TEST(SimulatorTest, ArkvaleWithBudgetCoveringContextMatchesFullCache) {
  auto source = SmallTrace();
  auto report = RunSimulation(*source, Options("arkvale", 40));  // 520 tokens = 33 pages
  ASSERT_TRUE(report.ok()) << report.status();
  // Same pages, same order, same kernel: bit-identical outputs.
  EXPECT_EQ(report->max_rel_error, 0.0);
  EXPECT_EQ(report->stats.pages_attended, report->reference_stats.pages_attended);
  ASSERT_EQ(report->digest_recall.size(), 2u);
  for (double r : report->digest_recall) {
    EXPECT_GE(r, 0.0);
    EXPECT_LE(r, 1.0);
  }
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

TEST(SimulatorTest, OffloadedQuestHoldsItsBudgetAndAttendsWhatResidentQuestAttends) {
  auto source = SmallTrace();
  SimOptions resident = Options("quest", 8);
  resident.quest.n_dense_layers = 1;
  SimOptions offload = resident;
  offload.quest.offload = true;
  auto r = RunSimulation(*source, resident);
  auto o = RunSimulation(*source, offload);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(o.ok()) << o.status();
  // The dense layer holds the whole context (520 tokens = 33 pages); the
  // two sparse ones only their 8 attended pages, recalling the others.
  EXPECT_EQ(r->max_pages_in_use, 33u);
  EXPECT_EQ(o->max_pages_in_use, 33u);
  EXPECT_EQ(r->stats.pages_recalled, 0u);
  EXPECT_GT(o->stats.pages_recalled, 0u);
  // Same pages every step; recalled pages merge by their LSE, so only the
  // rounding differs.
  EXPECT_EQ(o->stats.pages_attended, r->stats.pages_attended);
  EXPECT_NEAR(o->mean_rel_error, r->mean_rel_error, 1e-5);
  EXPECT_GT(o->mean_rel_error, 0.0);
  // Per-KV-head lists cannot page out.
  offload.policy = "quest_per_head";
  EXPECT_EQ(RunSimulation(*source, offload).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(SimulatorTest, OffloadedQuestWithoutDenseLayersStaysWithinItsBudget) {
  auto source = SmallTrace();
  SimOptions o = Options("quest", 8);
  o.quest.n_dense_layers = 0;
  o.quest.offload = true;
  auto report = RunSimulation(*source, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->max_pages_in_use, 8u);
  EXPECT_GT(report->stats.pages_recalled, 0u);
}

TEST(SimulatorTest, PerKvHeadGroupsMatchFullCacheWhenTheBudgetCoversTheContext) {
  auto source = SmallTrace();  // 2 KV heads
  SimOptions o = Options("arkvale", 40);
  o.n_head_groups = 2;
  auto report = RunSimulation(*source, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->max_rel_error, 0.0);
  EXPECT_EQ(report->n_head_groups, 2u);
  // Each (layer, group) backed up its own 32 pages.
  EXPECT_EQ(report->counters.pages_backed_up, 3u * 2 * 32);
}

TEST(SimulatorTest, PerKvHeadGroupsKeepTheirOwnBudgets) {
  auto source = SmallTrace();
  SimOptions o = Options("arkvale", 8);
  o.arkvale.n_unlimited_layers = 0;
  o.n_head_groups = 2;
  // One budget per (layer, group), layer-major.
  o.layer_budget_pages = {8, 10, 8, 9, 12, 8};
  auto report = RunSimulation(*source, o);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->max_pages_in_use, 12u);
  EXPECT_GT(report->mean_rel_error, 0.0);
  o.n_head_groups = 3;
  EXPECT_EQ(RunSimulation(*source, o).status().code(), absl::StatusCode::kInvalidArgument);
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

TEST(SimulatorTest, RunsOnTheNamedDeviceOnly) {
  auto source = SmallTrace();
  SimOptions o = Options("arkvale", 8);
  o.device = "tpu";
  EXPECT_EQ(RunSimulation(*source, o).status().code(), absl::StatusCode::kInvalidArgument);
  o.device = "cpu";
  absl::StatusOr<SimReport> cpu = RunSimulation(*SmallTrace(), o);
  ASSERT_TRUE(cpu.ok()) << cpu.status();
  // The default is the CPU backend: the same report, bit for bit.
  absl::StatusOr<SimReport> dflt = RunSimulation(*SmallTrace(), Options("arkvale", 8));
  ASSERT_TRUE(dflt.ok()) << dflt.status();
  EXPECT_EQ(cpu->mean_rel_error, dflt->mean_rel_error);
  EXPECT_EQ(cpu->stats.pages_recalled, dflt->stats.pages_recalled);
}

TEST(AllocateLayerBudgetsTest, XkvGivesPagesWhereRetentionGrowsMost) {
  XkvProfile profile;
  profile.n_layers = 2;
  // Per-token importance increments, concave. In pages of 2 tokens:
  // layer 0 gains 0.8, 0.15, 0.05; layer 1 gains 0.4, 0.4, 0.2.
  profile.samples = {{{0.5, 0.3, 0.1, 0.05, 0.03, 0.02}, {0.2, 0.2, 0.2, 0.2, 0.1, 0.1}}};
  const std::string path = ::testing::TempDir() + "/sim_xkv." + std::to_string(getpid()) + ".prof";
  ASSERT_TRUE(WriteXkvProfile(path, profile).ok());
  AllocatorChoice choice{.kind = "xkv", .path = path, .total_pages = 4, .min_pages = 1};
  auto pages = AllocateLayerBudgets(choice, 2, 1, 12, 2);
  ASSERT_TRUE(pages.ok()) << pages.status();
  EXPECT_THAT(*pages, ::testing::ElementsAre(1, 3));
  choice.kind = "uniform";
  EXPECT_THAT(*AllocateLayerBudgets(choice, 2, 1, 12, 2), ::testing::ElementsAre(2, 2));
  choice.total_pages = 1;
  EXPECT_EQ(AllocateLayerBudgets(choice, 2, 1, 12, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  choice = AllocatorChoice{.kind = "xkv", .path = path + ".missing", .total_pages = 4};
  EXPECT_EQ(AllocateLayerBudgets(choice, 2, 1, 12, 2).status().code(),
            absl::StatusCode::kNotFound);
  choice.kind = "lru";
  EXPECT_EQ(AllocateLayerBudgets(choice, 2, 1, 12, 2).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvtier::worker
