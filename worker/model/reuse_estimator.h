// ReuseEstimator: decides per request whether loading a stored prompt
// prefix is faster than recomputing it, from the store's measured get
// bandwidth and the model's measured prefill speed.
//
//   load_s      = bytes / get_bytes_per_s + batches * batch_latency_s
//   recompute_s = PrefillFlops(0, prefix_tokens) / prefill_flops_per_s
//
// PrefillFlops counts the dense layers (2 FLOPs per weight per token) and
// causal attention (4 * n_layers * n_heads * head_dim FLOPs per
// query-key pair), so one FLOP rate measured at any context length
// predicts the quadratic cost of a long prefix. A prefix is loaded only
// when load_s < recompute_s; with a rate still unknown the estimator
// cannot decide (the caller measures first). Rates given in the options
// are fixed; rates left 0 are measured and smoothed over observations.
//
// Thread-safety: none; one admission thread owns it.
#ifndef KVTIER_WORKER_MODEL_REUSE_ESTIMATOR_H_
#define KVTIER_WORKER_MODEL_REUSE_ESTIMATOR_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/weights.h"

namespace kvtier::model {

struct ReuseEstimatorOptions {
  // Store get bandwidth in bytes/s. 0 (default): measured (ObserveLoad);
  // > 0: fixed, observations ignored (tests inject a slow store so).
  double get_bytes_per_s = 0;
  // Prefill speed in FLOP/s. 0 (default): measured (ObservePrefill); > 0:
  // fixed.
  double prefill_flops_per_s = 0;
  // Round-trip cost of one get batch. Default 200 us (a loopback RPC).
  double batch_latency_s = 200e-6;
  // Weight of a new observation in the running rates. Default 0.5; (0, 1].
  double smoothing = 0.5;

  absl::Status Validate() const;
};

// What the estimator decided for one request, for reports.
struct ReuseDecision {
  bool load = false;
  uint32_t prefix_tokens = 0;
  uint64_t bytes = 0;
  double load_s = 0;       // estimated
  double recompute_s = 0;  // estimated
  std::string DebugString() const;
};

class ReuseEstimator {
 public:
  // INVALID_ARGUMENT for bad options or a config without layers.
  static absl::StatusOr<ReuseEstimator> Create(const ModelConfig& config,
                                               const ReuseEstimatorOptions& options = {});

  // FLOPs of prefilling positions [begin, end) after `begin` cached ones.
  double PrefillFlops(uint32_t begin, uint32_t end) const;

  bool knows_bandwidth() const { return get_bytes_per_s_ > 0; }
  bool knows_prefill() const { return prefill_flops_per_s_ > 0; }
  double get_bytes_per_s() const { return get_bytes_per_s_; }
  double prefill_flops_per_s() const { return prefill_flops_per_s_; }

  // A get of `bytes` took `seconds` (ignored when the rate is fixed or the
  // sample is empty).
  void ObserveLoad(uint64_t bytes, double seconds);
  // Prefilling positions [begin, end) took `seconds`.
  void ObservePrefill(uint32_t begin, uint32_t end, double seconds);

  // Loading `bytes` in `batches` get batches instead of prefilling the
  // first `prefix_tokens` positions. FAILED_PRECONDITION while a rate is
  // unknown.
  absl::StatusOr<ReuseDecision> Decide(uint32_t prefix_tokens, uint64_t bytes,
                                       uint32_t batches) const;

 private:
  ReuseEstimator(const ReuseEstimatorOptions& options, double linear_flops_per_token,
                 double attention_flops_per_pair);

  ReuseEstimatorOptions options_;
  double linear_flops_per_token_ = 0;
  double attention_flops_per_pair_ = 0;
  double get_bytes_per_s_ = 0;
  double prefill_flops_per_s_ = 0;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_REUSE_ESTIMATOR_H_
