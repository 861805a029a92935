// The model on a GPU against the same run on the CPU: the worker's KV pools
// and decode attention there (WorkerBackendOptions::device = "cuda") for
// every kind of policy, and the dense layers there (TransformerOptions::
// device); equal logits up to fp32 summation order, step by step. Skipped
// without a usable GPU.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/device/device.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/transformer.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::model {
namespace {

// The build's path, or KVTIER_STORIES260K_DIR where the test runs on
// another machine than the one that built it.
std::string ModelDir() {
  const char* dir = std::getenv("KVTIER_STORIES260K_DIR");
  return dir != nullptr ? dir : KVTIER_STORIES260K_DIR;
}

class WorkerBackendCudaTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (!worker::CreateDevice("cuda").ok()) GTEST_SKIP() << "no usable CUDA device";
    auto m = LoadModel(ModelDir() + "/stories260K.bin", ModelDir() + "/tok512.bin");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = *std::move(m);
  }
  LoadedModel model_;
};

float MaxAbsDiff(absl::Span<const float> a, absl::Span<const float> b) {
  float worst = 0.0f;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - b[i]));
  return worst;
}

TEST_P(WorkerBackendCudaTest, LogitsMatchTheCpuBackendStepByStep) {
  const AttentionShape shape = model_.weights.config.attention_shape();
  // 128 tokens a layer (8 pages) of stories260K's 512: budgeted policies
  // evict, recall and re-rank over the run.
  const int budget = std::string(GetParam()) == "full" ? 0 : 128;
  std::unique_ptr<WorkerAttentionBackend> backends[2];
  std::unique_ptr<Transformer> models[2];
  for (int i = 0; i < 2; ++i) {
    auto b = WorkerAttentionBackend::Create(
        shape, {.policy = GetParam(), .budget_tokens = budget, .device = i ? "cuda" : "cpu"});
    ASSERT_TRUE(b.ok()) << b.status();
    backends[i] = *std::move(b);
    auto t = Transformer::Create(&model_.weights, backends[i].get(), {.max_batch_tokens = 64});
    ASSERT_TRUE(t.ok()) << t.status();
    models[i] = *std::move(t);
    ASSERT_TRUE(backends[i]->StartSequence(1).ok());
  }
  std::vector<int> prompt(200);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int>(1 + (i * 37) % 500);
  std::vector<float> logits[2];
  for (int i = 0; i < 2; ++i) {
    auto l = models[i]->Prefill(1, prompt, 0);
    ASSERT_TRUE(l.ok()) << l.status();
    logits[i].assign(l->begin(), l->end());
  }
  // Prefill attention runs on the CPU for both: the same bits.
  ASSERT_EQ(logits[0], logits[1]);
  int pos = static_cast<int>(prompt.size());
  for (int step = 0; step < 250; ++step, ++pos) {
    const int token = static_cast<int>(
        std::max_element(logits[0].begin(), logits[0].end()) - logits[0].begin());
    for (int i = 0; i < 2; ++i) {
      auto l = models[i]->Forward(1, token, pos);
      ASSERT_TRUE(l.ok()) << l.status() << " at step " << step;
      logits[i].assign(l->begin(), l->end());
    }
    // Attention outputs agree within 4e-5 of max |v| (worker_cuda_test);
    // through 5 layers the logits stay within 1e-3.
    ASSERT_LT(MaxAbsDiff(logits[0], logits[1]), 1e-3f) << "step " << step;
  }
  EXPECT_EQ(backends[0]->stats().pages_recalled, backends[1]->stats().pages_recalled);
}

TEST_P(WorkerBackendCudaTest, DenseLayersOnTheGpuMatchTheCpu) {
  if (std::string(GetParam()) != "full") GTEST_SKIP() << "one policy is enough";
  const AttentionShape shape = model_.weights.config.attention_shape();
  std::unique_ptr<DenseAttentionBackend> backends[2];
  std::unique_ptr<Transformer> models[2];
  for (int i = 0; i < 2; ++i) {
    auto b = DenseAttentionBackend::Create(shape);
    ASSERT_TRUE(b.ok()) << b.status();
    backends[i] = *std::move(b);
    auto t = Transformer::Create(&model_.weights, backends[i].get(),
                                 {.max_batch_tokens = 64, .device = i ? "cuda" : "cpu"});
    ASSERT_TRUE(t.ok()) << t.status();
    models[i] = *std::move(t);
    ASSERT_TRUE(backends[i]->StartSequence(1).ok());
  }
  std::vector<int> prompt(150);
  for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int>(1 + (i * 53) % 500);
  std::vector<float> logits[2];
  for (int i = 0; i < 2; ++i) {
    auto l = models[i]->Prefill(1, prompt, 0);
    ASSERT_TRUE(l.ok()) << l.status();
    logits[i].assign(l->begin(), l->end());
  }
  ASSERT_LT(MaxAbsDiff(logits[0], logits[1]), 1e-3f);
  for (int pos = static_cast<int>(prompt.size()); pos < 300; ++pos) {
    const int token = static_cast<int>(
        std::max_element(logits[0].begin(), logits[0].end()) - logits[0].begin());
    for (int i = 0; i < 2; ++i) {
      auto l = models[i]->Forward(1, token, pos);
      ASSERT_TRUE(l.ok()) << l.status();
      logits[i].assign(l->begin(), l->end());
    }
    // fp32 on both sides, summed in other orders (cuBLAS, no TF32).
    ASSERT_LT(MaxAbsDiff(logits[0], logits[1]), 1e-3f) << "position " << pos;
  }
}

INSTANTIATE_TEST_SUITE_P(Policies, WorkerBackendCudaTest,
                         ::testing::Values("full", "arkvale", "quest", "h2o", "arkv",
                                           "streaming_llm"));

}  // namespace
}  // namespace kvtier::model
