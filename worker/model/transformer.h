// Transformer: the forward pass of a Llama-family model in fp32.
//
// Per layer: RMSNorm, Q/K/V projections, RoPE on adjacent pairs (2i, 2i+1)
// of each head's first rope_dim dims with frequency theta^(-2i/rope_dim)
// (llama2.c run.c, and llama.cpp's rope type NORM used for LLAMA), attention
// through the AttentionBackend (the runner keeps no KV cache), output
// projection, residual; RMSNorm, SwiGLU feed-forward, residual. Then a final
// RMSNorm and the classifier. The dense layers (dense_layers.h) run on the
// CPU with OpenBLAS (sgemv per token, sgemm per aligned block of
// kPrefillRowBlock prefill positions, so that results never depend on how a
// prompt was batched: attention_backend.h) or on a GPU with cuBLAS.
//
// Thread-safety: none; one Transformer serves one thread. `weights` and
// `backend` must outlive it.
#ifndef KVTIER_WORKER_MODEL_TRANSFORMER_H_
#define KVTIER_WORKER_MODEL_TRANSFORMER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/model/attention_backend.h"
#include "worker/model/dense_layers.h"
#include "worker/model/weights.h"

namespace kvtier::model {

struct TransformerOptions {
  // Tokens per prefill batch (one sgemm per projection). Longer prompts are
  // processed in chunks of this size. Default 64; must be positive.
  int max_batch_tokens = 64;
  // Where the dense layers run (dense_layers.h): "cpu" (default), "cuda" or
  // "cuda:N". Attention runs wherever the backend runs it.
  std::string device = "cpu";
};

class Transformer {
 public:
  // INVALID_ARGUMENT when the weights are inconsistent, the options are
  // invalid or the backend's shape differs from the model's; the device's
  // errors (CreateDenseLayers).
  static absl::StatusOr<std::unique_ptr<Transformer>> Create(
      const ModelWeights* weights, AttentionBackend* backend,
      const TransformerOptions& options = {});

  // Runs `token` at position `pos` of `seq` and returns the next-token
  // logits ([vocab]; valid until the next call).
  // REQUIRES: seq was started on the backend and pos is its next position.
  absl::StatusOr<absl::Span<const float>> Forward(SequenceId seq, int token,
                                                  int pos);

  // Runs `tokens` at positions pos0, pos0 + 1, ... in batches and returns
  // the logits after the last one. INVALID_ARGUMENT when empty.
  absl::StatusOr<absl::Span<const float>> Prefill(SequenceId seq,
                                                  absl::Span<const int> tokens,
                                                  int pos0);

  const ModelConfig& config() const { return weights_.config; }

 private:
  Transformer(const ModelWeights& weights, AttentionBackend* backend,
              std::unique_ptr<DenseLayers> dense, int max_batch_tokens);
  // Runs n (<= max_batch_) tokens whose embeddings the dense layers hold;
  // leaves the residual stream of each token there.
  absl::Status RunLayers(SequenceId seq, int n, int pos0);
  // One layer: attention inputs, the backend, then the rest of the layer.
  absl::Status RunLayer(SequenceId seq, int layer, int n, int pos0);
  absl::Status CheckToken(int token) const;

  const ModelWeights& weights_;
  AttentionBackend* const backend_;
  const std::unique_ptr<DenseLayers> dense_;
  const int max_batch_;

  // What crosses to and from the backend, [max_batch_, width] row-major.
  std::vector<float> q_, k_, v_, att_;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_TRANSFORMER_H_
