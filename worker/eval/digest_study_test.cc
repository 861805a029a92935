// The digest study and the per-head selection metrics on hand-made keys
// whose attention and rankings are known in closed form.
#include "worker/eval/digest_study.h"

#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::eval {
namespace {

using ::testing::DoubleNear;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

const float kLn3 = std::log(3.0f);
const float kLn4 = std::log(4.0f);

// Two KV heads with one query head each, d = 1, pages of 1 token, q = 1:
// head 0 puts 4/7 on page 0 (1/7 elsewhere), head 1 puts 3/6 on page 3
// (1/6 elsewhere).
constexpr AttentionGeometry kTwoHeads{2, 2, 1, 1};
const std::vector<float> kTwoHeadKeys = {kLn4, 0, 0, 0, 0, 0, 0, kLn3};
const std::vector<float> kOnes = {1, 1};

TEST(EvaluateSelectionTest, PerKvHeadRankingsServeEachHead) {
  auto exact = ExactPageAttention(kTwoHeads, kTwoHeadKeys, kOnes);
  ASSERT_TRUE(exact.ok()) << exact.status();
  ASSERT_EQ(exact->head_mass.size(), 8u);
  EXPECT_THAT(exact->head_mass, ElementsAre(DoubleNear(4 / 7.0, 1e-6), DoubleNear(1 / 7.0, 1e-6),
                                            DoubleNear(1 / 7.0, 1e-6), DoubleNear(1 / 7.0, 1e-6),
                                            DoubleNear(1 / 6.0, 1e-6), DoubleNear(1 / 6.0, 1e-6),
                                            DoubleNear(1 / 6.0, 1e-6), DoubleNear(3 / 6.0, 1e-6)));
  const std::vector<uint32_t> ks = {1, 4};
  // Shared: scores (ln 4, 0, 0, ln 3) pick page 0, which holds 4/7 of head
  // 0's attention and 1/6 of head 1's.
  auto rows = DigestPageRows(kTwoHeads, kernels::DigestKind::kMinMax, kTwoHeadKeys, kOnes,
                             Selection::kShared);
  ASSERT_TRUE(rows.ok()) << rows.status();
  ASSERT_EQ(rows->size(), 4u);
  auto shared = EvaluateSelection(kTwoHeads, *exact, *rows, Selection::kShared, ks);
  ASSERT_TRUE(shared.ok()) << shared.status();
  EXPECT_THAT(shared->recall, ElementsAre(1.0, -1.0));
  EXPECT_THAT(shared->mass, ElementsAre(DoubleNear((4 / 7.0 + 1 / 6.0) / 2, 1e-6), -1.0));
  // One ranking per KV head: each takes its own page.
  for (Selection s : {Selection::kPerKvHead, Selection::kPerQueryHead}) {
    rows = DigestPageRows(kTwoHeads, kernels::DigestKind::kMinMax, kTwoHeadKeys, kOnes, s);
    ASSERT_TRUE(rows.ok()) << rows.status();
    ASSERT_EQ(rows->size(), 8u) << SelectionName(s);
    auto per_head = EvaluateSelection(kTwoHeads, *exact, *rows, s, ks);
    ASSERT_TRUE(per_head.ok()) << per_head.status();
    EXPECT_THAT(per_head->recall, ElementsAre(1.0, -1.0)) << SelectionName(s);
    EXPECT_THAT(per_head->mass, ElementsAre(DoubleNear((4 / 7.0 + 3 / 6.0) / 2, 1e-6), -1.0))
        << SelectionName(s);
  }
}

TEST(EvaluateSelectionTest, PerQueryHeadSplitsAGroup) {
  // Two query heads on one KV head, q = (1, -1), keys (ln 4, 0, 0, -ln 4):
  // head 0 attends page 0 (4 of 6.25), head 1 page 3. Their group sum is 0
  // on every page, so the KV-head ranking picks page 0 (ties go low).
  const AttentionGeometry g{2, 1, 1, 1};
  const std::vector<float> keys = {kLn4, 0, 0, -kLn4};
  const std::vector<float> q = {1, -1};
  auto exact = ExactPageAttention(g, keys, q);
  ASSERT_TRUE(exact.ok()) << exact.status();
  const std::vector<uint32_t> ks = {1};
  auto group = DigestPageRows(g, kernels::DigestKind::kMinMax, keys, q, Selection::kPerKvHead);
  ASSERT_TRUE(group.ok());
  EXPECT_THAT(*group, ElementsAre(0.0f, 0.0f, 0.0f, 0.0f));
  auto by_group = EvaluateSelection(g, *exact, *group, Selection::kPerKvHead, ks);
  ASSERT_TRUE(by_group.ok()) << by_group.status();
  EXPECT_THAT(by_group->mass, ElementsAre(DoubleNear((4 + 0.25) / 12.5, 1e-6)));
  auto single = DigestPageRows(g, kernels::DigestKind::kMinMax, keys, q, Selection::kPerQueryHead);
  ASSERT_TRUE(single.ok());
  auto by_head = EvaluateSelection(g, *exact, *single, Selection::kPerQueryHead, ks);
  ASSERT_TRUE(by_head.ok()) << by_head.status();
  EXPECT_THAT(by_head->recall, ElementsAre(1.0));
  EXPECT_THAT(by_head->mass, ElementsAre(DoubleNear(4 / 6.25, 1e-6)));
}

TEST(EvaluateSelectionTest, RejectsRowsOfTheWrongShape) {
  auto exact = ExactPageAttention(kTwoHeads, kTwoHeadKeys, kOnes);
  ASSERT_TRUE(exact.ok());
  const std::vector<float> four(4, 0.0f);
  const std::vector<uint32_t> ks = {1};
  EXPECT_EQ(EvaluateSelection(kTwoHeads, *exact, four, Selection::kPerKvHead, ks).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<float> eight(8, 0.0f);
  const std::vector<uint32_t> zero = {0};
  EXPECT_EQ(EvaluateSelection(kTwoHeads, *exact, eight, Selection::kPerKvHead, zero)
                .status().code(),
            absl::StatusCode::kInvalidArgument);
}

DigestStudyOptions SmallStudy() {
  DigestStudyOptions o;
  o.page_sizes = {1, 4};
  o.ks = {1};
  o.budget_fractions = {2};
  o.kinds = {kernels::DigestKind::kMinMax};
  o.selections = {Selection::kShared, Selection::kPerKvHead};
  o.exact_ranking = false;
  return o;
}

TEST(DigestStudyTest, RowsPerCellAndSamplesOnlyWhereKLeavesAChoice) {
  auto study = DigestStudy::Create(2, 2, 1, SmallStudy());
  ASSERT_TRUE(study.ok()) << study.status();
  ASSERT_TRUE(study->Add(kTwoHeadKeys, kOnes).ok());
  ASSERT_TRUE(study->Add(kTwoHeadKeys, kOnes).ok());
  const std::string json = study->Json();
  // Pages of 1: 4 pages, k = 1 and k = ceil(4 / 2) = 2, two samples each.
  EXPECT_THAT(json, HasSubstr("{\"page_size\": 1, \"digest\": \"minmax\", \"selection\": "
                              "\"kv_head\", \"k\": \"1\", \"recall\": 1.0000, \"mass\": 0.5357, "
                              "\"samples\": 2}"));
  EXPECT_THAT(json, HasSubstr("{\"page_size\": 1, \"digest\": \"minmax\", \"selection\": "
                              "\"shared\", \"k\": \"1\", \"recall\": 1.0000, \"mass\": 0.3690, "
                              "\"samples\": 2}"));
  EXPECT_THAT(json, HasSubstr("\"selection\": \"shared\", \"k\": \"1/2\", \"recall\": 1.0000, "
                              "\"mass\": 0.6905, \"samples\": 2}"));
  // Pages of 4: one full page, nothing to choose.
  EXPECT_THAT(json, HasSubstr("{\"page_size\": 4, \"digest\": \"minmax\", \"selection\": "
                              "\"shared\", \"k\": \"1\", \"recall\": 0.0000, \"mass\": 0.0000, "
                              "\"samples\": 0}"));
  // 2 page sizes x 1 digest x 2 selections x 2 ks.
  size_t rows = 0;
  for (size_t at = json.find("page_size"); at != std::string::npos;
       at = json.find("page_size", at + 1)) {
    ++rows;
  }
  EXPECT_EQ(rows, 8u);
}

TEST(DigestStudyTest, ExactRankingHoldsTheMostMass) {
  // Pages of 2, q = 1, keys (ln 2.5, ln 2.5, ln 3, 0, 0, 0): exp 2.5, 2.5,
  // 3, 1, 1, 1 (sum 11). Page 1 has the largest token (3/11) and min/max
  // picks it (mass 4/11); page 0 holds the most mass (5/11).
  DigestStudyOptions o = SmallStudy();
  o.page_sizes = {2};
  o.budget_fractions.clear();
  o.selections = {Selection::kShared};
  o.exact_ranking = true;
  auto study = DigestStudy::Create(1, 1, 1, o);
  ASSERT_TRUE(study.ok()) << study.status();
  const float ln25 = std::log(2.5f);
  ASSERT_TRUE(study->Add(std::vector<float>{ln25, ln25, kLn3, 0, 0, 0}, std::vector<float>{1})
                  .ok());
  const std::string json = study->Json();
  EXPECT_THAT(json, HasSubstr("\"digest\": \"minmax\", \"selection\": \"shared\", "
                              "\"k\": \"1\", \"recall\": 1.0000, \"mass\": 0.3636"));
  EXPECT_THAT(json, HasSubstr("\"digest\": \"exact\", \"selection\": \"shared\", "
                              "\"k\": \"1\", \"recall\": 0.0000, \"mass\": 0.4545"));
}

TEST(DigestStudyTest, RejectsEmptyOrZeroOptions) {
  DigestStudyOptions o = SmallStudy();
  o.page_sizes = {0};
  EXPECT_EQ(DigestStudy::Create(2, 2, 1, o).status().code(), absl::StatusCode::kInvalidArgument);
  o = SmallStudy();
  o.budget_fractions = {0};
  EXPECT_EQ(DigestStudy::Create(2, 2, 1, o).status().code(), absl::StatusCode::kInvalidArgument);
  o = SmallStudy();
  o.ks.clear();
  o.budget_fractions.clear();
  EXPECT_EQ(DigestStudy::Create(2, 2, 1, o).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(DigestStudy::Create(3, 2, 1, SmallStudy()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(DigestStudyTest, TraceGivesTheLastPromptQueryAndEveryStepOfEveryLayer) {
  const std::string path = (std::filesystem::temp_directory_path() /
                            ("digest_study." + std::to_string(getpid()) + ".kvtrace"))
                               .string();
  const TraceHeader h{.n_layers = 2, .n_q_heads = 2, .n_kv_heads = 2, .head_dim = 1,
                      .prompt_len = 4, .n_prompt_queries = 2, .decode_steps = 3};
  {
    auto w = TraceWriter::Create(path, h);
    ASSERT_TRUE(w.ok()) << w.status();
    for (uint32_t l = 0; l < h.n_layers; ++l) {
      TracePromptLayer p;
      p.queries = {0, 0, 1, 1};
      p.keys = kTwoHeadKeys;
      p.values = kTwoHeadKeys;
      ASSERT_TRUE(w->WritePromptLayer(l, p).ok());
    }
    for (uint32_t s = 0; s < h.decode_steps; ++s) {
      for (uint32_t l = 0; l < h.n_layers; ++l) {
        ASSERT_TRUE(w->WriteStep(s, l, TraceStep{kOnes, {0, 0}, {0, 0}}).ok());
      }
    }
    ASSERT_TRUE(w->Finish().ok());
  }
  auto r = TraceReader::Open(path);
  ASSERT_TRUE(r.ok()) << r.status();
  DigestStudyOptions o = SmallStudy();
  o.page_sizes = {1};
  o.budget_fractions.clear();
  auto study = DigestStudy::Create(2, 2, 1, o);
  ASSERT_TRUE(study.ok());
  std::vector<uint32_t> layers;
  ASSERT_TRUE(study->AddTrace(*r, [&](uint32_t l) { layers.push_back(l); }).ok());
  EXPECT_THAT(layers, ElementsAre(0u, 1u));
  // 2 layers x (1 prompt query + 3 steps).
  EXPECT_THAT(study->Json(), HasSubstr("\"samples\": 8}"));
  auto other = DigestStudy::Create(2, 1, 1, o);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->AddTrace(*r).code(), absl::StatusCode::kInvalidArgument);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace kvtier::eval
