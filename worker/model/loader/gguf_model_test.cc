// The GGUF model path end to end: stories260K rewritten as a Llama GGUF
// (F32 tensors, its vocabulary as a SentencePiece "llama" tokenizer) must
// reproduce llama2.c's greedy output, and malformed models are rejected.
#include "worker/model/loader/gguf_model.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/generate.h"
#include "worker/model/loader/gguf_test_writer.h"
#include "worker/model/loader/llama2c.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/tokenizer/score_bpe_tokenizer.h"
#include "worker/model/transformer.h"

namespace kvtier::model {
namespace {

using ::testing::HasSubstr;

const std::string kDir = KVTIER_STORIES260K_DIR;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const std::string path = UniqueTempPath(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
  return path;
}

std::string ReadmeOracle() {
  const std::string readme = ReadAll(kDir + "/README.md");
  const size_t open = readme.find("```\n", readme.find("## Known output"));
  const size_t close = readme.find("\n```", open + 4);
  if (open == std::string::npos || close == std::string::npos) return "";
  return readme.substr(open + 4, close - open - 4);
}

// The pieces and scores of tok512.bin, spaces as U+2581.
void AddStoriesVocab(GgufTestWriter& w) {
  const std::string bytes = ReadAll(kDir + "/tok512.bin");
  std::vector<std::string> pieces;
  std::vector<float> scores;
  size_t pos = 4;
  for (int i = 0; i < 512; ++i) {
    float score;
    int32_t len;
    std::memcpy(&score, bytes.data() + pos, 4);
    std::memcpy(&len, bytes.data() + pos + 4, 4);
    pieces.push_back(absl::StrReplaceAll(bytes.substr(pos + 8, len),
                                         {{" ", "\xE2\x96\x81"}}));
    scores.push_back(score);
    pos += 8 + len;
  }
  w.AddString("tokenizer.ggml.model", "llama");
  w.AddStringArray("tokenizer.ggml.tokens", pieces);
  w.AddFloat32Array("tokenizer.ggml.scores", scores);
  w.AddUint32("tokenizer.ggml.bos_token_id", 1);
  w.AddUint32("tokenizer.ggml.eos_token_id", 2);
}

// Rewrites a ModelWeights as a Llama GGUF; `skip` names a tensor to leave
// out.
GgufTestWriter StoriesAsGguf(const ModelWeights& m,
                             const std::string& skip = "") {
  const ModelConfig& c = m.config;
  GgufTestWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.embedding_length", c.dim);
  w.AddUint32("llama.feed_forward_length", c.hidden_dim);
  w.AddUint32("llama.block_count", c.n_layers);
  w.AddUint32("llama.attention.head_count", c.n_heads);
  w.AddUint32("llama.attention.head_count_kv", c.n_kv_heads);
  w.AddUint32("llama.context_length", c.max_positions);
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddFloat32("llama.rope.freq_base", 10000.0f);
  AddStoriesVocab(w);
  const uint64_t dim = c.dim, hid = c.hidden_dim, kv = c.kv_dim();
  auto add = [&](const std::string& name, std::vector<uint64_t> dims,
                 const std::vector<float>& v) {
    if (name != skip) w.AddF32Tensor(name, dims, v);
  };
  add("token_embd.weight", {dim, uint64_t(c.vocab_size)}, m.token_embedding);
  add("output_norm.weight", {dim}, m.rms_final);
  for (int i = 0; i < c.n_layers; ++i) {
    const LayerWeights& l = m.layers[i];
    const std::string p = absl::StrCat("blk.", i, ".");
    add(p + "attn_norm.weight", {dim}, l.rms_att);
    add(p + "attn_q.weight", {dim, dim}, l.wq);
    add(p + "attn_k.weight", {dim, kv}, l.wk);
    add(p + "attn_v.weight", {dim, kv}, l.wv);
    add(p + "attn_output.weight", {dim, dim}, l.wo);
    add(p + "ffn_norm.weight", {dim}, l.rms_ffn);
    add(p + "ffn_gate.weight", {dim, hid}, l.w_gate);
    add(p + "ffn_up.weight", {dim, hid}, l.w_up);
    add(p + "ffn_down.weight", {hid, dim}, l.w_down);
  }
  return w;
}

class GgufModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<ModelWeights> w =
        LoadLlama2cCheckpoint(kDir + "/stories260K.bin");
    ASSERT_TRUE(w.ok()) << w.status();
    stories_ = *std::move(w);
  }
  ModelWeights stories_;
};

TEST_F(GgufModelTest, StoriesAsGgufMatchesLlama2cOracle) {
  const std::string oracle = ReadmeOracle();
  ASSERT_GT(oracle.size(), 100u);
  const std::string path =
      WriteTemp("stories.gguf", StoriesAsGguf(stories_).Build());
  absl::StatusOr<LoadedModel> m = LoadModel(path, "");
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->format, "gguf");
  EXPECT_EQ(m->weights.config.rope_dim, 8);
  EXPECT_EQ(m->weights.token_embedding, stories_.token_embedding);
  EXPECT_EQ(m->weights.layers[4].wk, stories_.layers[4].wk);
  auto backend = DenseAttentionBackend::Create(m->weights.config.attention_shape());
  ASSERT_TRUE(backend.ok());
  auto transformer = Transformer::Create(&m->weights, backend->get());
  ASSERT_TRUE(transformer.ok());
  absl::StatusOr<Sampler> sampler = Sampler::Create(0.0f, 1);
  GenerationOptions options;
  options.steps = 200;
  options.add_bos = m->add_bos;  // "llama" tokenizers default to BOS
  options.stop_tokens = {1};     // as run.c, which stops on BOS
  absl::StatusOr<GenerationResult> r =
      Generate(**transformer, **backend, *m->tokenizer, *sampler, "", options);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->text, oracle);
}

TEST_F(GgufModelTest, SentencePieceTokenizerEncodesLikeLlama2c) {
  const std::string path =
      WriteTemp("stories_tok.gguf", StoriesAsGguf(stories_).Build());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  absl::StatusOr<GgufTokenizerInfo> spm = LoadGgufTokenizer(**file);
  ASSERT_TRUE(spm.ok()) << spm.status();
  auto l2c = ScoreBpeTokenizer::LoadLlama2c(kDir + "/tok512.bin", 512);
  ASSERT_TRUE(l2c.ok());
  const std::string text = "Lily saw a big dog. \"Hi!\" she said.";
  absl::StatusOr<std::vector<int>> a = spm->tokenizer->Encode(text, true);
  absl::StatusOr<std::vector<int>> b = (*l2c)->Encode(text, true);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(*a, *b);
  std::string decoded;
  for (size_t i = 1; i < a->size(); ++i) {
    decoded += spm->tokenizer->Decode((*a)[i - 1], (*a)[i]);
  }
  EXPECT_EQ(decoded, text);
}

TEST_F(GgufModelTest, MissingTensorIsInvalidArgument) {
  const std::string path = WriteTemp(
      "missing.gguf", StoriesAsGguf(stories_, "blk.3.ffn_up.weight").Build());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok());
  absl::StatusOr<ModelWeights> w = LoadGgufWeights(**file);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("blk.3.ffn_up.weight"));
}

TEST_F(GgufModelTest, WrongShapeIsInvalidArgument) {
  GgufTestWriter w = StoriesAsGguf(stories_, "blk.0.attn_k.weight");
  w.AddF32Tensor("blk.0.attn_k.weight", {32, 64}, stories_.layers[0].wk);
  auto file = GgufFile::Open(WriteTemp("shape.gguf", w.Build()));
  ASSERT_TRUE(file.ok());
  absl::StatusOr<ModelWeights> weights = LoadGgufWeights(**file);
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(weights.status().message(), HasSubstr("attn_k"));
}

// Tensors and metadata must agree: a block past block_count would be
// dropped without a word (a 30-block model run as 2), and a declared
// vocabulary other than the embedding's is refused.
TEST_F(GgufModelTest, BlocksPastTheCountAndAnotherVocabSizeAreRefused) {
  const int n = stories_.config.n_layers;
  GgufTestWriter extra = StoriesAsGguf(stories_);
  extra.AddF32Tensor(absl::StrCat("blk.", n, ".attn_norm.weight"),
                     {uint64_t(stories_.config.dim)}, stories_.layers[0].rms_att);
  auto file = GgufFile::Open(WriteTemp("extra.gguf", extra.Build()));
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<ModelWeights> w = LoadGgufWeights(**file);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(),
              HasSubstr(absl::StrCat("blk.", n, ".attn_norm.weight lies past block_count ", n)));

  GgufTestWriter vocab = StoriesAsGguf(stories_);
  vocab.AddUint32("llama.vocab_size", stories_.config.vocab_size + 1);
  file = GgufFile::Open(WriteTemp("vocab.gguf", vocab.Build()));
  ASSERT_TRUE(file.ok()) << file.status();
  w = LoadGgufWeights(**file);
  EXPECT_EQ(w.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(w.status().message(), HasSubstr("llama.vocab_size 513"));
  // The same count as the embedding's is fine.
  GgufTestWriter same = StoriesAsGguf(stories_);
  same.AddUint32("llama.vocab_size", stories_.config.vocab_size);
  file = GgufFile::Open(WriteTemp("same.gguf", same.Build()));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_TRUE(LoadGgufWeights(**file).ok());
}

// block_count is metadata: a count the file's tensors cannot back is refused
// before anything is sized by it (a fuzzed file asked for 3.6 GB).
TEST(GgufModelConfigTest, BlockCountBeyondTheTensorsIsRefusedBeforeAllocating) {
  GgufTestWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.embedding_length", 8);
  w.AddUint32("llama.feed_forward_length", 16);
  w.AddUint32("llama.block_count", 10'000'000);
  w.AddUint32("llama.attention.head_count", 2);
  w.AddUint32("llama.attention.head_count_kv", 1);
  w.AddUint32("llama.context_length", 16);
  w.AddFloat32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.AddF32Tensor("token_embd.weight", {8, 4}, std::vector<float>(32, 0.5f));
  w.AddF32Tensor("output_norm.weight", {8}, std::vector<float>(8, 1.0f));
  auto file = GgufFile::Open(WriteTemp("blocks.gguf", w.Build()));
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<ModelWeights> weights = LoadGgufWeights(**file);
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(weights.status().message(), HasSubstr("block_count 10000000"));
}

TEST(GgufModelConfigTest, OtherArchitectureIsRejected) {
  GgufTestWriter w;
  w.AddString("general.architecture", "gpt2");
  auto file = GgufFile::Open(WriteTemp("arch.gguf", w.Build()));
  ASSERT_TRUE(file.ok());
  absl::StatusOr<ModelWeights> weights = LoadGgufWeights(**file);
  EXPECT_EQ(weights.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(weights.status().message(), HasSubstr("gpt2"));
}

TEST(GgufModelConfigTest, GgufRejectsSeparateTokenizer) {
  GgufTestWriter w;
  w.AddString("general.architecture", "llama");
  const std::string path = WriteTemp("tok.gguf", w.Build());
  EXPECT_EQ(LoadModel(path, kDir + "/tok512.bin").status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::model
