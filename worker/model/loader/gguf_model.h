// Builds a Llama-architecture model (weights and tokenizer) from a GGUF
// file, following llama.cpp's names:
//   llama.{embedding_length, feed_forward_length, block_count,
//          attention.head_count, attention.head_count_kv, context_length,
//          attention.layer_norm_rms_epsilon, rope.freq_base,
//          rope.dimension_count}
//   token_embd, output_norm, output (absent: tied to token_embd), and per
//   block blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
//   ffn_gate, ffn_up, ffn_down}.
// GGUF Q/K rows are already in llama.cpp's order for rope type NORM
// (adjacent pairs), which the Transformer applies; nothing is permuted here.
//
// Tokenizers: tokenizer.ggml.model "gpt2" (byte-level BPE with merges) and
// "llama" (SentencePiece scores).
#ifndef KVTIER_WORKER_MODEL_LOADER_GGUF_MODEL_H_
#define KVTIER_WORKER_MODEL_LOADER_GGUF_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/loader/gguf.h"
#include "worker/model/tokenizer/tokenizer.h"
#include "worker/model/weights.h"

namespace kvtier::model {

// INVALID_ARGUMENT for another architecture, missing/inconsistent keys or
// tensors of the wrong shape.
absl::StatusOr<ModelWeights> LoadGgufWeights(const GgufFile& file);

struct GgufTokenizerInfo {
  std::unique_ptr<Tokenizer> tokenizer;
  bool add_bos = false;          // tokenizer.ggml.add_bos_token
  std::vector<int> stop_tokens;  // EOS and EOT when present
};

// INVALID_ARGUMENT for an unsupported tokenizer.ggml.model or a malformed
// vocabulary.
absl::StatusOr<GgufTokenizerInfo> LoadGgufTokenizer(const GgufFile& file);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_LOADER_GGUF_MODEL_H_
