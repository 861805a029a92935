// stories260K's real Q/K/V recorded through TraceRecordingBackend: the file
// holds exactly what the model handed its backend, the model's output is
// unchanged, and every policy replayed on it stays within its budget.
#include "worker/eval/trace_recorder.h"

#include <unistd.h>

#include <filesystem>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/eval/model_session.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/loader/model_loader.h"
#include "worker/sim/simulator.h"

namespace kvtier::eval {
namespace {

const std::string kDir = KVTIER_STORIES260K_DIR;

// Keeps every K and q of layer 1 as the model hands them over.
class Spy : public model::AttentionBackend {
 public:
  explicit Spy(model::AttentionBackend* inner) : inner_(inner) {}
  const model::AttentionShape& shape() const override { return inner_->shape(); }
  absl::Status StartSequence(model::SequenceId s) override { return inner_->StartSequence(s); }
  absl::Status EndSequence(model::SequenceId s) override { return inner_->EndSequence(s); }
  absl::Status Append(model::SequenceId s, int layer, int pos, absl::Span<const float> k,
                      absl::Span<const float> v) override {
    if (layer == 1) keys.insert(keys.end(), k.begin(), k.end());
    return inner_->Append(s, layer, pos, k, v);
  }
  absl::Status Attend(model::SequenceId s, int layer, absl::Span<const float> q,
                      absl::Span<float> out) override {
    if (layer == 1) queries.insert(queries.end(), q.begin(), q.end());
    return inner_->Attend(s, layer, q, out);
  }
  std::vector<float> keys, queries;

 private:
  model::AttentionBackend* inner_;
};

class TraceRecorderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto m = model::LoadModel(kDir + "/stories260K.bin", kDir + "/tok512.bin");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
    path_ = ::testing::TempDir() + "/recorder_test." + std::to_string(getpid()) + ".kvtrace";
    std::filesystem::remove(path_);
  }
  model::LoadedModel model_;
  std::string path_;
};

TEST_F(TraceRecorderTest, IncompleteRecordingLeavesNoFile) {
  auto dense = model::DenseAttentionBackend::Create(model_.weights.config.attention_shape());
  ASSERT_TRUE(dense.ok());
  auto prompt = Encode(model_, "Once upon a time, there was a little girl named Lily.", true);
  ASSERT_TRUE(prompt.ok());
  // Announced: the prompt and 5 decode steps; run: the prompt and 2 steps.
  auto rec = TraceRecordingBackend::Create(dense->get(), path_, prompt->size(), 4, 5);
  ASSERT_TRUE(rec.ok()) << rec.status();
  std::vector<int> generated;
  ASSERT_TRUE(RunForced(model_, **rec, *prompt, {}, 3, &generated).ok());
  EXPECT_EQ((*rec)->Finish().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_FALSE(std::filesystem::exists(path_));
}

TEST_F(TraceRecorderTest, PromptAndStepsRoundTrip) {
  auto dense = model::DenseAttentionBackend::Create(model_.weights.config.attention_shape());
  ASSERT_TRUE(dense.ok());
  Spy spy(dense->get());
  constexpr uint32_t kSteps = 5, kQueries = 4;
  auto prompt = Encode(model_, "Once upon a time, there was a little girl named Lily.", true);
  ASSERT_TRUE(prompt.ok());
  const uint32_t n = prompt->size();
  auto rec = TraceRecordingBackend::Create(&spy, path_, n, kQueries, kSteps);
  ASSERT_TRUE(rec.ok()) << rec.status();
  std::vector<int> generated;
  auto run = RunForced(model_, **rec, *prompt, {}, kSteps + 1, &generated);
  ASSERT_TRUE(run.ok()) << run.status();
  ASSERT_TRUE((*rec)->Finish().ok());

  // Unchanged output: the same greedy tokens without the recorder.
  auto plain = model::DenseAttentionBackend::Create(model_.weights.config.attention_shape());
  std::vector<int> expected;
  ASSERT_TRUE(RunForced(model_, **plain, *prompt, {}, kSteps + 1, &expected).ok());
  EXPECT_EQ(generated, expected);

  auto r = TraceReader::Open(path_);
  ASSERT_TRUE(r.ok()) << r.status();
  const model::AttentionShape s = model_.weights.config.attention_shape();
  EXPECT_EQ(r->header().n_layers, static_cast<uint32_t>(s.n_layers));
  EXPECT_EQ(r->header().prompt_len, n);
  EXPECT_EQ(r->header().n_prompt_queries, kQueries);
  EXPECT_EQ(r->header().decode_steps, kSteps);
  const size_t kv = s.kv_dim(), qd = s.q_dim();
  // The spy (no batch override) saw every position one at a time.
  ASSERT_EQ(spy.keys.size(), (n + kSteps) * kv);
  ASSERT_EQ(spy.queries.size(), (n + kSteps) * qd);
  TracePromptLayer p;
  ASSERT_TRUE(r->ReadPromptLayer(1, &p).ok());
  EXPECT_EQ(p.keys, std::vector<float>(spy.keys.begin(), spy.keys.begin() + n * kv));
  EXPECT_EQ(p.queries, std::vector<float>(spy.queries.begin() + (n - kQueries) * qd,
                                          spy.queries.begin() + n * qd));
  for (uint32_t step = 0; step < kSteps; ++step) {
    TraceStep t;
    ASSERT_TRUE(r->ReadStep(step, 1, &t).ok());
    const size_t pos = n + step;
    EXPECT_EQ(t.key, std::vector<float>(spy.keys.begin() + pos * kv,
                                        spy.keys.begin() + (pos + 1) * kv));
    EXPECT_EQ(t.query, std::vector<float>(spy.queries.begin() + pos * qd,
                                          spy.queries.begin() + (pos + 1) * qd));
  }
}

// Policies replayed on stories260K's real attention never hold more pages
// than their budget, and a budget covering the context changes nothing.
TEST_F(TraceRecorderTest, PoliciesKeepTheirBudgetOnRealAttention) {
  auto dense = model::DenseAttentionBackend::Create(model_.weights.config.attention_shape());
  ASSERT_TRUE(dense.ok());
  std::string text;
  for (int i = 0; i < 12; ++i) text += "Once upon a time, there was a little girl named Lily. ";
  auto prompt = Encode(model_, text, true);
  ASSERT_TRUE(prompt.ok());
  constexpr uint32_t kSteps = 40;
  auto rec = TraceRecordingBackend::Create(dense->get(), path_, prompt->size(), 32, kSteps);
  ASSERT_TRUE(rec.ok());
  std::vector<int> generated;
  ASSERT_TRUE(RunForced(model_, **rec, *prompt, {}, kSteps + 1, &generated).ok());
  ASSERT_TRUE((*rec)->Finish().ok());
  const uint32_t context = prompt->size() + kSteps;
  for (const char* policy : {"sliding_window", "streaming_llm", "h2o", "tova", "arkvale", "arkv",
                             "quest"}) {
    worker::SimOptions o;
    o.policy = policy;
    o.page_size = 8;
    o.pool_dtype = DType::kF32;
    o.budget_pages = 6;
    o.arkvale.topk_pages = 0;
    o.arkvale.n_unlimited_layers = 0;
    o.quest.n_dense_layers = 0;
    o.recall_ks = {};
    auto r = TraceReader::Open(path_);
    ASSERT_TRUE(r.ok());
    auto rep = worker::RunSimulation(*worker::FileTraceSource(*std::move(r)), o);
    ASSERT_TRUE(rep.ok()) << policy << ": " << rep.status();
    EXPECT_EQ(rep->steps, kSteps) << policy;
    if (std::string(policy) == "quest") {
      // Quest keeps the context resident and attends at most its budget.
      EXPECT_LE(rep->stats.pages_attended, uint64_t{6} * kSteps * rep->n_layers) << policy;
    } else {
      EXPECT_LE(rep->max_pages_in_use, 6u) << policy;
    }
    EXPECT_GT(rep->mean_rel_error, 0.0) << policy;  // the budget is binding
    o.budget_pages = (context + 7) / 8;
    auto r2 = TraceReader::Open(path_);
    auto whole = worker::RunSimulation(*worker::FileTraceSource(*std::move(r2)), o);
    ASSERT_TRUE(whole.ok()) << policy << ": " << whole.status();
    if (std::string(policy) == "sliding_window" || std::string(policy) == "streaming_llm" ||
        std::string(policy) == "quest" || std::string(policy) == "arkvale") {
      EXPECT_EQ(whole->max_rel_error, 0.0) << policy;
    }
  }
}

}  // namespace
}  // namespace kvtier::eval
