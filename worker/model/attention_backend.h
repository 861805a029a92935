// AttentionBackend: the seam between the model runner and the KV cache.
//
// The transformer owns no KV cache and no cache policy. Per layer and per
// token it hands the backend the token's keys (after RoPE) and values, then
// asks for the attention output of its query heads. A backend decides what
// it keeps, where, and over which positions it attends: the dense backend
// (dense_attention_backend.h) keeps every position (the "full" policy); the
// worker runtime's adapter runs the budgeted policies.
//
// Layouts (all fp32, row-major, contiguous):
//   k, v  : [n_kv_heads, head_dim]            one token
//   q, out: [n_heads, head_dim]               one token
//   batched variants prepend [n_tokens].
// Query head h reads KV head h / (n_heads / n_kv_heads) (grouped-query
// attention). Scores are q.k / sqrt(head_dim), softmax over the attended
// positions, output is the softmax-weighted sum of values.
//
// Thread-safety: implementations need not be thread-safe; the transformer
// calls one backend from one thread.
#ifndef KVTIER_WORKER_MODEL_ATTENTION_BACKEND_H_
#define KVTIER_WORKER_MODEL_ATTENTION_BACKEND_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace kvtier::model {

// The attention geometry of a model; fixed for a backend's lifetime.
struct AttentionShape {
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // REQUIRES: divides n_heads
  int head_dim = 0;
  int max_positions = 0;  // context length the model was trained for

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }
  // INVALID_ARGUMENT unless every field is positive and heads group evenly.
  absl::Status Validate() const;
};

using SequenceId = uint64_t;

// Prefill computes its rows in blocks of this many positions, aligned to
// multiples of it (dense layers and attention alike), so a row's result
// depends on its position's block and the rows before it, never on the
// batch it was prefilled in: two requests that prefill the same tokens
// give bit-identical K/V pages (pages hold a multiple of it), and a prompt
// resumed after a stored prefix gives the logits of prefilling it whole.
inline constexpr int kPrefillRowBlock = 16;

// Rows [begin, begin + rows) of a prompt batch: one aligned row block, or
// the part of one the batch holds.
struct PrefillRowBlock {
  int begin;
  int rows;
};
// The row blocks of a batch of n rows whose first sits at position pos0,
// in order. REQUIRES: n >= 0, pos0 >= 0.
std::vector<PrefillRowBlock> PrefillRowBlocks(int n, int pos0);

class AttentionBackend {
 public:
  virtual ~AttentionBackend() = default;

  virtual const AttentionShape& shape() const = 0;

  // Starts an empty sequence. ALREADY_EXISTS if `seq` is live.
  virtual absl::Status StartSequence(SequenceId seq) = 0;
  // Drops everything the backend holds for `seq`. NOT_FOUND if not live.
  virtual absl::Status EndSequence(SequenceId seq) = 0;

  // The token ids at positions pos0, pos0 + 1, ... of `seq`, announced
  // before any layer's K/V of those positions: a paged cache keys its pages
  // by the tokens they hold. The default ignores them.
  virtual absl::Status AppendTokens(SequenceId /*seq*/, int /*pos0*/,
                                    absl::Span<const int> /*tokens*/) {
    return absl::OkStatus();
  }

  // The prompt of `seq` is complete (Transformer::Prefill calls this after
  // its last batch). Cheap: a backend that has work left on the prompt
  // keeps it for HandOffPrompt. Default: nothing to do.
  virtual absl::Status EndPrefill(SequenceId /*seq*/) { return absl::OkStatus(); }

  // Does the work a complete prompt left: a page cache places the prompt's
  // pages under its budget, plans them and backs them up. The first token
  // needs none of it, so callers run it after taking that token: it delays
  // neither the first token nor counts as decoding. If they do not, the
  // next Append does it, and EndSequence for a complete prompt (so its
  // pages are stored all the same). Default: nothing to do.
  virtual absl::Status HandOffPrompt(SequenceId /*seq*/) { return absl::OkStatus(); }

  // Stores the K/V of the token at `pos` in `layer`.
  // REQUIRES: positions are appended in order 0, 1, 2, ... per layer;
  // anything else is INVALID_ARGUMENT. RESOURCE_EXHAUSTED past the backend's
  // capacity.
  virtual absl::Status Append(SequenceId seq, int layer, int pos,
                              absl::Span<const float> k,
                              absl::Span<const float> v) = 0;

  // Attention of one query (the token most recently appended to `layer`)
  // over the positions the backend chooses to attend (all of them for the
  // full policy). Writes `out` ([n_heads, head_dim]).
  virtual absl::Status Attend(SequenceId seq, int layer,
                              absl::Span<const float> q,
                              absl::Span<float> out) = 0;

  // Prefill: appends `n_tokens` tokens at positions pos0.. and computes
  // causal attention for each of them (query i sees positions <= pos0 + i).
  // The default implementation interleaves Append and Attend token by token,
  // which is exact for any policy; backends may override with a faster
  // equivalent.
  virtual absl::Status AppendAndAttendBatch(SequenceId seq, int layer,
                                            int pos0, int n_tokens,
                                            absl::Span<const float> k,
                                            absl::Span<const float> v,
                                            absl::Span<const float> q,
                                            absl::Span<float> out);
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_ATTENTION_BACKEND_H_
