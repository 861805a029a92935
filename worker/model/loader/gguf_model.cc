#include "worker/model/loader/gguf_model.h"

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/tokenizer/byte_bpe_tokenizer.h"
#include "worker/model/tokenizer/score_bpe_tokenizer.h"

namespace kvtier::model {
namespace {

constexpr uint64_t kMaxSize = 1 << 24;

// A positive integer key (or `fallback` when absent and fallback > 0).
absl::StatusOr<int> GetSize(const GgufFile& f, absl::string_view key,
                            int fallback = 0) {
  if (f.FindValue(key) == nullptr && fallback > 0) return fallback;
  ASSIGN_OR_RETURN(uint64_t v, f.GetUint(key));
  if (v == 0 || v > kMaxSize) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF ", key, " = ", v, " is out of range"));
  }
  return static_cast<int>(v);
}

absl::StatusOr<ModelConfig> ReadConfig(const GgufFile& f) {
  ASSIGN_OR_RETURN(std::string arch, f.GetString("general.architecture"));
  if (arch != "llama") {
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF architecture '", arch, "' unsupported (only 'llama')"));
  }
  ModelConfig c;
  ASSIGN_OR_RETURN(c.dim, GetSize(f, "llama.embedding_length"));
  ASSIGN_OR_RETURN(c.hidden_dim, GetSize(f, "llama.feed_forward_length"));
  ASSIGN_OR_RETURN(c.n_layers, GetSize(f, "llama.block_count"));
  ASSIGN_OR_RETURN(c.n_heads, GetSize(f, "llama.attention.head_count"));
  ASSIGN_OR_RETURN(c.n_kv_heads,
                   GetSize(f, "llama.attention.head_count_kv", c.n_heads));
  ASSIGN_OR_RETURN(c.max_positions, GetSize(f, "llama.context_length"));
  if (c.dim % c.n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF embedding_length ", c.dim, " not a multiple of head_count ",
        c.n_heads));
  }
  ASSIGN_OR_RETURN(c.head_dim, GetSize(f, "llama.attention.key_length",
                                       c.dim / c.n_heads));
  ASSIGN_OR_RETURN(c.rope_dim,
                   GetSize(f, "llama.rope.dimension_count", c.head_dim));
  if (f.FindValue("llama.rope.freq_base") != nullptr) {
    ASSIGN_OR_RETURN(double theta, f.GetFloat("llama.rope.freq_base"));
    c.rope_theta = static_cast<float>(theta);
  }
  ASSIGN_OR_RETURN(double eps,
                   f.GetFloat("llama.attention.layer_norm_rms_epsilon"));
  c.rms_eps = static_cast<float>(eps);
  const GgufTensor* emb = f.FindTensor("token_embd.weight");
  if (emb == nullptr || emb->dims.size() != 2 || emb->dims[1] > kMaxSize) {
    return absl::InvalidArgumentError(
        "GGUF token_embd.weight is missing or not a [dim, vocab] matrix");
  }
  c.vocab_size = static_cast<int>(emb->dims[1]);
  // Optional, but where given it must agree with the embedding.
  if (f.FindValue("llama.vocab_size") != nullptr) {
    ASSIGN_OR_RETURN(const uint64_t declared, f.GetUint("llama.vocab_size"));
    if (declared != emb->dims[1]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF llama.vocab_size ", declared, " but token_embd.weight has ", emb->dims[1],
          " rows"));
    }
  }
  RETURN_IF_ERROR(c.Validate());
  return c;
}

}  // namespace

absl::StatusOr<ModelWeights> LoadGgufWeights(const GgufFile& f) {
  ModelWeights w;
  ASSIGN_OR_RETURN(w.config, ReadConfig(f));
  const ModelConfig& c = w.config;
  const uint64_t dim = c.dim, hidden = c.hidden_dim, vocab = c.vocab_size;
  const uint64_t q = static_cast<uint64_t>(c.n_heads) * c.head_dim;
  const uint64_t kv = c.kv_dim();
  const uint64_t vec[] = {dim};
  ASSIGN_OR_RETURN(w.token_embedding,
                   f.ReadTensor("token_embd.weight", {dim, vocab}));
  ASSIGN_OR_RETURN(w.rms_final, f.ReadTensor("output_norm.weight", vec));
  if (f.FindTensor("output.weight") != nullptr) {
    ASSIGN_OR_RETURN(w.classifier, f.ReadTensor("output.weight", {dim, vocab}));
  }
  // Nine tensors per block: a block count the file cannot hold is refused
  // before anything is sized by it (block_count is metadata, any number).
  constexpr uint64_t kTensorsPerBlock = 9;
  if (static_cast<uint64_t>(c.n_layers) * kTensorsPerBlock > f.tensors().size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF block_count ", c.n_layers, " needs ", uint64_t{kTensorsPerBlock} * c.n_layers,
        " block tensors; the file has ", f.tensors().size(), " tensors in all"));
  }
  // A block past block_count would be silently dropped (a 30-block model
  // run as 2 blocks): the count and the blocks must agree.
  for (const GgufTensor& t : f.tensors()) {
    int block = 0;
    if (absl::StartsWith(t.name, "blk.") &&
        absl::SimpleAtoi(absl::string_view(t.name).substr(4, t.name.find('.', 4) - 4), &block) &&
        block >= c.n_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF tensor ", t.name, " lies past block_count ", c.n_layers));
    }
  }
  w.layers.resize(c.n_layers);
  for (int i = 0; i < c.n_layers; ++i) {
    LayerWeights& l = w.layers[i];
    const std::string p = absl::StrCat("blk.", i, ".");
    ASSIGN_OR_RETURN(l.rms_att, f.ReadTensor(p + "attn_norm.weight", vec));
    ASSIGN_OR_RETURN(l.wq, f.ReadTensor(p + "attn_q.weight", {dim, q}));
    ASSIGN_OR_RETURN(l.wk, f.ReadTensor(p + "attn_k.weight", {dim, kv}));
    ASSIGN_OR_RETURN(l.wv, f.ReadTensor(p + "attn_v.weight", {dim, kv}));
    ASSIGN_OR_RETURN(l.wo, f.ReadTensor(p + "attn_output.weight", {q, dim}));
    ASSIGN_OR_RETURN(l.rms_ffn, f.ReadTensor(p + "ffn_norm.weight", vec));
    ASSIGN_OR_RETURN(l.w_gate,
                     f.ReadTensor(p + "ffn_gate.weight", {dim, hidden}));
    ASSIGN_OR_RETURN(l.w_up, f.ReadTensor(p + "ffn_up.weight", {dim, hidden}));
    ASSIGN_OR_RETURN(l.w_down,
                     f.ReadTensor(p + "ffn_down.weight", {hidden, dim}));
  }
  RETURN_IF_ERROR(w.Validate());
  return w;
}

namespace {

absl::StatusOr<int> OptionalTokenId(const GgufFile& f, absl::string_view key,
                                    int vocab) {
  if (f.FindValue(key) == nullptr) return -1;
  ASSIGN_OR_RETURN(uint64_t id, f.GetUint(key));
  if (id >= static_cast<uint64_t>(vocab)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF ", key, " = ", id, " outside the ", vocab, "-token vocabulary"));
  }
  return static_cast<int>(id);
}

}  // namespace

absl::StatusOr<GgufTokenizerInfo> LoadGgufTokenizer(const GgufFile& f) {
  ASSIGN_OR_RETURN(std::string model, f.GetString("tokenizer.ggml.model"));
  ASSIGN_OR_RETURN(std::vector<std::string> tokens,
                   f.GetStringArray("tokenizer.ggml.tokens"));
  const int vocab = tokens.size();
  GgufTokenizerInfo info;
  ASSIGN_OR_RETURN(int bos, OptionalTokenId(f, "tokenizer.ggml.bos_token_id",
                                            vocab));
  ASSIGN_OR_RETURN(int eos, OptionalTokenId(f, "tokenizer.ggml.eos_token_id",
                                            vocab));
  ASSIGN_OR_RETURN(int eot, OptionalTokenId(f, "tokenizer.ggml.eot_token_id",
                                            vocab));
  ASSIGN_OR_RETURN(int unk, OptionalTokenId(
                                f, "tokenizer.ggml.unknown_token_id", vocab));
  if (eos >= 0) info.stop_tokens.push_back(eos);
  if (eot >= 0 && eot != eos) info.stop_tokens.push_back(eot);
  info.add_bos = model == "llama";  // llama.cpp's default per model type
  if (f.FindValue("tokenizer.ggml.add_bos_token") != nullptr) {
    ASSIGN_OR_RETURN(info.add_bos, f.GetBool("tokenizer.ggml.add_bos_token"));
  }
  std::vector<int64_t> types;
  if (f.FindValue("tokenizer.ggml.token_type") != nullptr) {
    ASSIGN_OR_RETURN(types, f.GetIntArray("tokenizer.ggml.token_type"));
    if (types.size() != tokens.size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "GGUF has ", tokens.size(), " tokens but ", types.size(),
          " token types"));
    }
  }
  if (model == "llama") {
    ScoreBpeTokenizer::Vocab v;
    v.pieces = std::move(tokens);
    ASSIGN_OR_RETURN(v.scores, f.GetFloatArray("tokenizer.ggml.scores"));
    v.bos_id = bos;
    v.eos_id = eos;
    ASSIGN_OR_RETURN(info.tokenizer,
                     ScoreBpeTokenizer::Create(
                         std::move(v),
                         ScoreBpeTokenizer::Convention::kSentencePiece));
  } else if (model == "gpt2") {
    ByteBpeTokenizer::Vocab v;
    v.tokens = std::move(tokens);
    v.token_types = std::move(types);
    ASSIGN_OR_RETURN(v.merges, f.GetStringArray("tokenizer.ggml.merges"));
    v.bos_id = bos;
    v.eos_id = eos;
    v.unk_id = unk;
    if (f.FindValue("tokenizer.ggml.pre") != nullptr) {
      ASSIGN_OR_RETURN(v.pre, f.GetString("tokenizer.ggml.pre"));
    }
    ASSIGN_OR_RETURN(info.tokenizer, ByteBpeTokenizer::Create(std::move(v)));
  } else {
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF tokenizer model '", model, "' unsupported ('gpt2' or 'llama')"));
  }
  if (info.tokenizer->vocab_size() != vocab) {
    return absl::InternalError("tokenizer size changed while loading");
  }
  return info;
}

}  // namespace kvtier::model
