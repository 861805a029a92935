// DenseLayers: everything of the forward pass but attention, on one device.
//
// The Transformer (transformer.h) drives it token batch by token batch: it
// embeds the batch, and per layer asks for the attention inputs (RMSNorm,
// Q/K/V projections, RoPE), hands them to the AttentionBackend, and gives
// the attention output back (output projection, residual, then RMSNorm,
// SwiGLU feed-forward, residual); at the end it asks for the logits of one
// row. Q, K, V, the attention output and the logits cross in host memory,
// where every AttentionBackend takes them; the residual stream stays on
// the device.
//
// CPU (OpenBLAS, fp32; the reference, bit-identical to what the runner
// computed before this seam) and CUDA (cuBLAS fp32 and small kernels;
// within fp32 summation order of the CPU, not batch-invariant).
//
// Thread-safety: none; one instance per Transformer. `weights` must outlive
// it.
#ifndef KVTIER_WORKER_MODEL_DENSE_LAYERS_H_
#define KVTIER_WORKER_MODEL_DENSE_LAYERS_H_

#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/model/weights.h"

namespace kvtier::model {

class DenseLayers {
 public:
  virtual ~DenseLayers() = default;

  // Rows [0, n) of the residual stream are the embeddings of `tokens`
  // (n = tokens.size() <= max_batch; tokens already checked).
  virtual absl::Status Embed(absl::Span<const int> tokens) = 0;
  // The attention inputs of rows [0, n) at positions pos0, pos0 + 1, ...:
  // q [n][n_heads * head_dim], k and v [n][kv_dim], host memory, RoPE
  // applied to q and k.
  virtual absl::Status AttentionInputs(int layer, int n, int pos0, float* q, float* k,
                                       float* v) = 0;
  // Adds the output projection of `att` (host, [n][n_heads * head_dim]) to
  // rows [0, n), then the feed-forward block with its residual.
  virtual absl::Status FinishLayer(int layer, int n, int pos0, const float* att) = 0;
  // The next-token logits of row `row` ([vocab], host; valid until the next
  // call).
  virtual absl::StatusOr<absl::Span<const float>> Logits(int row) = 0;
};

// `device`: "cpu", or "cuda" / "cuda:N" in a build with CUDA
// (FAILED_PRECONDITION without it, UNAVAILABLE without a usable GPU,
// INVALID_ARGUMENT for another name).
absl::StatusOr<std::unique_ptr<DenseLayers>> CreateDenseLayers(std::string_view device,
                                                               const ModelWeights& weights,
                                                               int max_batch);

// The CPU implementation.
std::unique_ptr<DenseLayers> CreateCpuDenseLayers(const ModelWeights& weights, int max_batch);

#if KVTIER_WITH_CUDA
// The CUDA implementation on GPU `ordinal`: weights copied there once.
absl::StatusOr<std::unique_ptr<DenseLayers>> CreateCudaDenseLayers(const ModelWeights& weights,
                                                                   int max_batch, int ordinal);
#endif

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_DENSE_LAYERS_H_
