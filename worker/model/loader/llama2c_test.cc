// The llama2.c checkpoint path against an external oracle: stories260K's
// greedy output as printed by llama2.c's run.c (quoted in the model's
// README), plus the loader's rejection of damaged files.
#include "worker/model/loader/llama2c.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/generate.h"
#include "worker/model/loader/gguf_test_writer.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/transformer.h"

namespace kvtier::model {
namespace {

using ::testing::HasSubstr;

const std::string kDir = KVTIER_STORIES260K_DIR;
const std::string kModel = kDir + "/stories260K.bin";
const std::string kTokenizer = kDir + "/tok512.bin";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The text inside the README's "Known output" code block.
std::string ReadmeOracle() {
  const std::string readme = ReadAll(kDir + "/README.md");
  const size_t section = readme.find("## Known output");
  if (section == std::string::npos) return "";
  const size_t open = readme.find("```\n", section);
  if (open == std::string::npos) return "";
  const size_t close = readme.find("\n```", open + 4);
  if (close == std::string::npos) return "";
  return readme.substr(open + 4, close - open - 4);
}

std::string TempPath(const std::string& name) {
  return UniqueTempPath(name);
}

void WriteFile(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
}

TEST(Llama2cTest, LoadsStories260KShape) {
  absl::StatusOr<ModelWeights> w = LoadLlama2cCheckpoint(kModel);
  ASSERT_TRUE(w.ok()) << w.status();
  EXPECT_EQ(w->config.dim, 64);
  EXPECT_EQ(w->config.hidden_dim, 172);
  EXPECT_EQ(w->config.n_layers, 5);
  EXPECT_EQ(w->config.n_heads, 8);
  EXPECT_EQ(w->config.n_kv_heads, 4);
  EXPECT_EQ(w->config.head_dim, 8);
  EXPECT_EQ(w->config.vocab_size, 512);
  EXPECT_EQ(w->config.max_positions, 512);
  EXPECT_TRUE(w->classifier.empty());  // shared with the embedding
}

TEST(Llama2cTest, GreedyFromBosMatchesLlama2cByteForByte) {
  const std::string oracle = ReadmeOracle();
  ASSERT_GT(oracle.size(), 100u) << "no oracle text in " << kDir;
  absl::StatusOr<LoadedModel> m = LoadModel(kModel, kTokenizer);
  ASSERT_TRUE(m.ok()) << m.status();
  auto backend = DenseAttentionBackend::Create(m->weights.config.attention_shape());
  ASSERT_TRUE(backend.ok());
  auto transformer = Transformer::Create(&m->weights, backend->get());
  ASSERT_TRUE(transformer.ok()) << transformer.status();
  absl::StatusOr<Sampler> sampler = Sampler::Create(0.0f, 1);
  ASSERT_TRUE(sampler.ok());
  GenerationOptions options;
  options.steps = 200;
  options.add_bos = m->add_bos;
  options.stop_tokens = m->stop_tokens;
  absl::StatusOr<GenerationResult> r = Generate(
      **transformer, **backend, *m->tokenizer, *sampler, "", options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->prompt_tokens, 1);
  EXPECT_EQ(r->text, oracle);
}

TEST(Llama2cTest, RejectsTruncatedCheckpoint) {
  const std::string bytes = ReadAll(kModel);
  ASSERT_EQ(bytes.size(), 1056540u);
  const std::string path = TempPath("truncated.bin");
  WriteFile(path, bytes.substr(0, bytes.size() - 4));
  absl::StatusOr<ModelWeights> w = LoadLlama2cCheckpoint(path);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(w.status().message(), HasSubstr("truncated"));
  WriteFile(path, bytes.substr(0, 10));
  EXPECT_EQ(LoadLlama2cCheckpoint(path).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(Llama2cTest, RejectsTrailingBytesAndBadHeader) {
  const std::string bytes = ReadAll(kModel);
  const std::string path = TempPath("bad.bin");
  WriteFile(path, bytes + "xxxx");
  EXPECT_EQ(LoadLlama2cCheckpoint(path).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::string bad_heads = bytes;
  const int32_t three = 3;  // n_kv_heads 3 does not divide 8 heads
  std::memcpy(bad_heads.data() + 16, &three, 4);
  WriteFile(path, bad_heads);
  absl::StatusOr<ModelWeights> w = LoadLlama2cCheckpoint(path);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("n_kv_heads"));
  std::string negative_dim = bytes;
  const int32_t minus = -64;
  std::memcpy(negative_dim.data(), &minus, 4);
  WriteFile(path, negative_dim);
  EXPECT_EQ(LoadLlama2cCheckpoint(path).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// Every field within its bound, but the weights they imply pass 2^64
// bytes: the size, wrapped, would have matched this 4 MiB file.
TEST(Llama2cTest, RejectsAHeaderWhoseSizeWrapsAround) {
  const int32_t header[7] = {1 << 20, 524287, 1 << 20, 1 << 19, 1 << 17, 1 << 20, 1};
  std::string bytes(reinterpret_cast<const char*>(header), sizeof(header));
  bytes.resize(4194340, '\0');
  const std::string path = TempPath("wrap.bin");
  WriteFile(path, bytes);
  absl::StatusOr<ModelWeights> w = LoadLlama2cCheckpoint(path);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << w.status();
  EXPECT_THAT(w.status().message(), HasSubstr("more than 2^64"));
}

// One NaN or infinity in a weight makes every logit NaN: refused, naming
// where it is.
TEST(Llama2cTest, RejectsNonFiniteWeights) {
  const std::string bytes = ReadAll(kModel);
  const std::string path = TempPath("nan.bin");
  // stories260K: dim 64, vocab 512; the floats after the embedding begin
  // with layer 0's rms_att (n_layers x dim), then wq.
  const size_t wq_start = 28 + (512 * 64 + 5 * 64) * sizeof(float);
  for (const float bad : {std::nanf(""), -INFINITY}) {
    std::string damaged = bytes;
    std::memcpy(damaged.data() + wq_start + 3 * sizeof(float), &bad, sizeof(bad));
    WriteFile(path, damaged);
    absl::StatusOr<ModelWeights> w = LoadLlama2cCheckpoint(path);
    EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument) << w.status();
    EXPECT_THAT(w.status().message(), HasSubstr("layer 0 wq holds"));
    EXPECT_THAT(w.status().message(), HasSubstr("at element 3"));
  }
}

TEST(Llama2cTest, MissingFileIsNotFound) {
  EXPECT_EQ(LoadLlama2cCheckpoint(TempPath("absent.bin")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(Llama2cTest, LoaderRequiresTokenizerAndMatchingVocab) {
  absl::StatusOr<LoadedModel> m = LoadModel(kModel, "");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(m.status().message(), HasSubstr("it needs a tokenizer file"));
  // A file that is no model at all says so, not that it needs a tokenizer.
  const std::string empty = TempPath("empty.bin");
  WriteFile(empty, "");
  m = LoadModel(empty, "");
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(m.status().message(), HasSubstr("not a GGUF model"));
  // A tokenizer file cut short is DATA_LOSS.
  const std::string tok = ReadAll(kTokenizer);
  const std::string path = TempPath("tok_short.bin");
  WriteFile(path, tok.substr(0, tok.size() - 3));
  EXPECT_EQ(LoadModel(kModel, path).status().code(),
            absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace kvtier::model
