// DenseAttentionBackend: the "full" policy. Keeps every position's K/V in
// fp32 and computes exact softmax attention over all of them, in the same
// order of operations as llama2.c's run.c (so its greedy output can be
// compared byte for byte).
//
// Memory: per live sequence 2 * n_layers * positions * kv_dim floats, grown
// as tokens arrive; bounded by max_sequences * max_positions.
// Thread-safety: none (see AttentionBackend).
#ifndef KVTIER_WORKER_MODEL_DENSE_ATTENTION_BACKEND_H_
#define KVTIER_WORKER_MODEL_DENSE_ATTENTION_BACKEND_H_

#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "worker/model/attention_backend.h"

namespace kvtier::model {

// Exact attention of one token's query heads over `n_positions` cached
// positions (keys/values [n_positions, n_kv_heads, head_dim]), in run.c's
// order of operations. `scores` is scratch of at least n_positions floats.
// REQUIRES: n_positions > 0; q and out hold shape.q_dim() floats.
void DenseAttention(const AttentionShape& shape, const float* q,
                    const float* keys, const float* values, int n_positions,
                    float* scores, float* out);

// Causal attention of a prompt batch, with BLAS: queries i = 0..n-1
// ([n, q_dim]) sit at positions n_past + i and see keys/values
// [0, n_past + i] of `keys`/`values` ([n_past + n, kv_dim]). Same result as
// DenseAttention per query up to float rounding, and bit for bit the same
// for a row however the prompt is split into batches. Runs on every core
// (ParallelBlasFor in blas_kernels.h); each thread keeps scratch of about
// group * kPrefillRowBlock * (n_past + n) floats. out is [n, q_dim].
void DenseCausalAttention(const AttentionShape& shape, const float* q, int n,
                          const float* keys, const float* values, int n_past, float* out);

struct DenseAttentionOptions {
  // Live sequences at once; StartSequence beyond it is RESOURCE_EXHAUSTED.
  // Default 16. Must be positive.
  int max_sequences = 16;
  // Positions kept per sequence; 0 (the default) means shape.max_positions.
  // Must be >= 0.
  int max_positions = 0;
};

class DenseAttentionBackend : public AttentionBackend {
 public:
  // INVALID_ARGUMENT on an invalid shape or options.
  static absl::StatusOr<std::unique_ptr<DenseAttentionBackend>> Create(
      const AttentionShape& shape, const DenseAttentionOptions& options = {});

  const AttentionShape& shape() const override { return shape_; }
  absl::Status StartSequence(SequenceId seq) override;
  absl::Status EndSequence(SequenceId seq) override;
  absl::Status Append(SequenceId seq, int layer, int pos,
                      absl::Span<const float> k,
                      absl::Span<const float> v) override;
  absl::Status Attend(SequenceId seq, int layer, absl::Span<const float> q,
                      absl::Span<float> out) override;
  // Appends the batch, then one DenseCausalAttention over it.
  absl::Status AppendAndAttendBatch(SequenceId seq, int layer, int pos0,
                                    int n_tokens, absl::Span<const float> k,
                                    absl::Span<const float> v,
                                    absl::Span<const float> q,
                                    absl::Span<float> out) override;

  // Positions stored for (seq, layer); NOT_FOUND for an unknown sequence.
  absl::StatusOr<int> Length(SequenceId seq, int layer) const;

 private:
  struct LayerCache {
    std::vector<float> k;  // [positions, kv_dim]
    std::vector<float> v;  // [positions, kv_dim]
    int length = 0;
  };
  using SequenceCache = std::vector<LayerCache>;  // one per layer

  DenseAttentionBackend(const AttentionShape& shape, int max_sequences,
                        int max_positions);
  absl::StatusOr<LayerCache*> Find(SequenceId seq, int layer);

  // Const after construction.
  const AttentionShape shape_;
  const int max_sequences_;
  const int max_positions_;

  absl::flat_hash_map<SequenceId, SequenceCache> sequences_;
  std::vector<float> scores_;  // Attend's scratch, max_positions floats
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_DENSE_ATTENTION_BACKEND_H_
