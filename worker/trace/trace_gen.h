// Synthetic decode traces with the attention structure real long-context
// models show, so policies, allocators and benchmarks have something
// meaningful to chew on without a model:
//  - attention sinks: the first n_sink_tokens keys carry a large component on
//    a "sink" channel that every query shares (and no position signal);
//  - local windows: RoPE-like rotating channel pairs, identical phase for a
//    query and a key at the same position, so q.k peaks at distance 0 and
//    decays over about local_window / 2 tokens (frequencies are random per
//    (layer, KV head) in [1, 4] / local_window, so the pattern never
//    repeats exactly);
//  - sparse long-range retrieval: n_retrieval_heads query heads per layer
//    whose queries load a "needle" channel on which only n_needles far-away
//    needle tokens' keys (the same positions in every layer) are large.
// Strengths are given as logits (q.k / sqrt(head_dim)), so they mean the same
// at every head_dim. Everything is a pure function of (seed, layer, head,
// position): any record can be produced alone, in any order, and the same
// options always give the same bytes.
//
// Channel layout of every q/k vector (head_dim >= 3 + 2 * n_rope_pairs):
//   0: sink, 1: needle, [2, 2 + 2 * n_rope_pairs): position pairs,
//   rest: Gaussian noise. Values are N(0, 1) on every channel.
//
// Thread-safety: immutable after Create; all methods are const.
#ifndef KVTIER_WORKER_TRACE_TRACE_GEN_H_
#define KVTIER_WORKER_TRACE_TRACE_GEN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/trace/trace.h"

namespace kvtier {

struct TraceGenOptions {
  // Model shape; defaults are a small GQA model (group of 4).
  uint32_t n_layers = 4;
  uint32_t n_q_heads = 8;
  uint32_t n_kv_heads = 2;  // divides n_q_heads
  uint32_t head_dim = 64;   // >= 3 + 2 * n_rope_pairs
  TraceDtype dtype = TraceDtype::kF32;
  uint32_t prompt_len = 4096;
  uint32_t n_prompt_queries = 32;  // <= prompt_len
  uint32_t decode_steps = 16;
  uint64_t seed = 1;

  uint32_t n_sink_tokens = 4;      // < prompt_len
  double sink_logit = 8.0;         // >= 0: logit every query adds to each sink
  uint32_t n_rope_pairs = 8;       // >= 1
  double local_logit = 6.0;        // >= 0: logit at distance 0 from position
  uint32_t local_window = 64;      // >= 1: decay length of the local signal
  uint32_t n_retrieval_heads = 1;  // per layer, <= n_q_heads
  uint32_t n_needles = 4;
  // Needles lie in [n_sink_tokens, prompt_len - needle_margin).
  uint32_t needle_margin = 256;
  double needle_logit = 14.0;  // >= 0: logit a retrieval query gives a needle
  double noise_logit = 0.5;    // >= 0: std of the random part of a logit
};

// INVALID_ARGUMENT for a shape the trace format rejects, channels that do not
// fit head_dim, needles that do not fit the prompt, or a negative strength.
absl::Status ValidateTraceGenOptions(const TraceGenOptions& options);

class TraceGenerator {
 public:
  static absl::StatusOr<TraceGenerator> Create(const TraceGenOptions& options);

  TraceHeader header() const;
  const TraceGenOptions& options() const { return options_; }
  // Sorted needle positions, shared by all layers.
  const std::vector<uint32_t>& needle_positions() const { return needles_; }
  bool IsRetrievalHead(uint32_t layer, uint32_t q_head) const;

  // REQUIRES: indices within the shape; out has head_dim floats.
  void Query(uint32_t layer, uint32_t q_head, uint32_t pos, float* out) const;
  void Key(uint32_t layer, uint32_t kv_head, uint32_t pos, float* out) const;
  void Value(uint32_t layer, uint32_t kv_head, uint32_t pos, float* out) const;

  // Whole records in the trace file's layouts.
  TracePromptLayer PromptLayer(uint32_t layer) const;
  TraceStep Step(uint32_t step, uint32_t layer) const;

 private:
  explicit TraceGenerator(const TraceGenOptions& options);
  void AddRope(uint32_t layer, uint32_t kv_head, uint32_t pos,
               float* out) const;
  void AddNoise(uint64_t stream, float sigma, float* out) const;

  TraceGenOptions options_;
  std::vector<uint32_t> needles_;
  std::vector<bool> needle_;     // [prompt_len]
  std::vector<bool> retrieval_;  // [layer * n_q_heads + q_head]
  std::vector<double> theta_;    // [layer][kv_head][pair]
  float sink_amp_ = 0, needle_amp_ = 0, rope_amp_ = 0, noise_sigma_ = 0;
};

// Writes a whole trace to `path` (atomically, see TraceWriter).
absl::Status GenerateTraceFile(const TraceGenOptions& options,
                               const std::string& path);

}  // namespace kvtier

#endif  // KVTIER_WORKER_TRACE_TRACE_GEN_H_
