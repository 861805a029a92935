#include "worker/model/transformer.h"

#include <algorithm>
#include <cmath>

#include "absl/types/span.h"
#include "gtest/gtest.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/loader/llama2c.h"

namespace kvtier::model {
namespace {

class TransformerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = LoadLlama2cCheckpoint(std::string(KVTIER_STORIES260K_DIR) +
                                   "/stories260K.bin");
    ASSERT_TRUE(w.ok()) << w.status();
    weights_ = *std::move(w);
  }
  ModelWeights weights_;
};

float MaxAbsDiff(absl::Span<const float> a, absl::Span<const float> b) {
  float max_diff = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    max_diff = std::max(max_diff, std::fabs(a[i] - b[i]));
  }
  return max_diff;
}

TEST_F(TransformerTest, PrefillMatchesTokenByToken) {
  const std::vector<int> tokens = {1,  403, 407, 261, 378, 11,  269, 291, 40,
                                   12, 77,  300, 301, 302, 303, 304, 305, 306,
                                   307, 308};
  auto b1 = DenseAttentionBackend::Create(weights_.config.attention_shape());
  auto b2 = DenseAttentionBackend::Create(weights_.config.attention_shape());
  ASSERT_TRUE(b1.ok() && b2.ok());
  // Batches of 8: the 20 tokens take chunks of 8, 8 and 4.
  auto batched = Transformer::Create(&weights_, b1->get(),
                                     {.max_batch_tokens = 8});
  auto single = Transformer::Create(&weights_, b2->get());
  ASSERT_TRUE(batched.ok() && single.ok());
  ASSERT_TRUE((*b1)->StartSequence(0).ok());
  ASSERT_TRUE((*b2)->StartSequence(0).ok());
  auto prefill = (*batched)->Prefill(0, tokens, 0);
  ASSERT_TRUE(prefill.ok()) << prefill.status();
  const std::vector<float> want(prefill->begin(), prefill->end());
  absl::Span<const float> got;
  for (size_t i = 0; i < tokens.size(); ++i) {
    auto logits = (*single)->Forward(0, tokens[i], i);
    ASSERT_TRUE(logits.ok()) << logits.status();
    got = *logits;
  }
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(MaxAbsDiff(got, want), 1e-4f);
  EXPECT_EQ(*(*b1)->Length(0, 4), 20);
}

// A prefill may resume anywhere. One that starts on a row block's last
// position and ends one past the next boundary runs blocks of 1, 16 and
// 1 rows in one call; every one of them counts (up to float rounding:
// the rows are blocked differently from a whole prefill).
TEST_F(TransformerTest, ResumedPrefillWithOneRowBlocksMatchesWholePrefill) {
  std::vector<int> tokens;
  for (int i = 0; i < 33; ++i) tokens.push_back(1 + (i * 37) % 500);
  auto whole_b = DenseAttentionBackend::Create(weights_.config.attention_shape());
  auto split_b = DenseAttentionBackend::Create(weights_.config.attention_shape());
  ASSERT_TRUE(whole_b.ok() && split_b.ok());
  auto whole = Transformer::Create(&weights_, whole_b->get());
  auto split = Transformer::Create(&weights_, split_b->get());
  ASSERT_TRUE(whole.ok() && split.ok());
  ASSERT_TRUE((*whole_b)->StartSequence(0).ok());
  ASSERT_TRUE((*split_b)->StartSequence(0).ok());
  auto want = (*whole)->Prefill(0, tokens, 0);
  ASSERT_TRUE(want.ok()) << want.status();
  const absl::Span<const int> all(tokens);
  ASSERT_TRUE((*split)->Prefill(0, all.subspan(0, 15), 0).ok());
  auto got = (*split)->Prefill(0, all.subspan(15), 15);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), want->size());
  EXPECT_LT(MaxAbsDiff(*got, *want), 1e-4f);
}

TEST_F(TransformerTest, RejectsBadInput) {
  auto b = DenseAttentionBackend::Create(weights_.config.attention_shape());
  ASSERT_TRUE(b.ok());
  auto t = Transformer::Create(&weights_, b->get());
  ASSERT_TRUE(t.ok());
  ASSERT_TRUE((*b)->StartSequence(3).ok());
  EXPECT_EQ((*t)->Forward(3, 512, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->Forward(3, -1, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->Prefill(3, {}, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Positions must arrive in order: the backend refuses position 5 first.
  EXPECT_EQ((*t)->Forward(3, 1, 5).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*t)->Forward(4, 1, 0).status().code(),
            absl::StatusCode::kNotFound);  // sequence never started
}

TEST_F(TransformerTest, CreateChecksShapeAndOptions) {
  AttentionShape other = weights_.config.attention_shape();
  other.n_kv_heads = 8;
  auto b = DenseAttentionBackend::Create(other);
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(Transformer::Create(&weights_, b->get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto ok = DenseAttentionBackend::Create(weights_.config.attention_shape());
  EXPECT_EQ(Transformer::Create(&weights_, ok->get(), {.max_batch_tokens = 0})
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  ModelWeights broken = weights_;
  broken.layers[2].wv.pop_back();
  EXPECT_EQ(Transformer::Create(&broken, ok->get()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Transformer::Create(&weights_, ok->get(), {.device = "gpu0"}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::model
