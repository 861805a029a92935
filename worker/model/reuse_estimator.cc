#include "worker/model/reuse_estimator.h"

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"

namespace kvtier::model {

absl::Status ReuseEstimatorOptions::Validate() const {
  if (!(get_bytes_per_s >= 0) || !(prefill_flops_per_s >= 0) || !(batch_latency_s >= 0) ||
      !(smoothing > 0 && smoothing <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "reuse estimator: get_bytes_per_s=", get_bytes_per_s, " (>= 0), prefill_flops_per_s=",
        prefill_flops_per_s, " (>= 0), batch_latency_s=", batch_latency_s,
        " (>= 0), smoothing=", smoothing, " (in (0, 1])"));
  }
  return absl::OkStatus();
}

std::string ReuseDecision::DebugString() const {
  return absl::StrFormat("%s %u prefix tokens (%.1f MiB): load %.3f s vs recompute %.3f s",
                         load ? "load" : "recompute", prefix_tokens, bytes / 1048576.0, load_s,
                         recompute_s);
}

absl::StatusOr<ReuseEstimator> ReuseEstimator::Create(const ModelConfig& c,
                                                      const ReuseEstimatorOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (c.n_layers < 1 || c.dim < 1 || c.n_heads < 1 || c.head_dim < 1) {
    return absl::InvalidArgumentError("reuse estimator: the model config has no layers");
  }
  const double q_dim = double{1} * c.n_heads * c.head_dim;
  const double weights_per_layer = c.dim * q_dim * 2 + 2.0 * c.dim * c.kv_dim() +
                                   3.0 * c.dim * c.hidden_dim;
  return ReuseEstimator(options, 2.0 * c.n_layers * weights_per_layer,
                        4.0 * c.n_layers * q_dim);
}

ReuseEstimator::ReuseEstimator(const ReuseEstimatorOptions& options,
                               double linear_flops_per_token, double attention_flops_per_pair)
    : options_(options),
      linear_flops_per_token_(linear_flops_per_token),
      attention_flops_per_pair_(attention_flops_per_pair),
      get_bytes_per_s_(options.get_bytes_per_s),
      prefill_flops_per_s_(options.prefill_flops_per_s) {}

double ReuseEstimator::PrefillFlops(uint32_t begin, uint32_t end) const {
  if (end <= begin) return 0;
  // Query i attends positions [0, i]: sum of (i + 1) over [begin, end).
  const double b = begin, e = end;
  const double pairs = (e * (e + 1) - b * (b + 1)) / 2;
  return (e - b) * linear_flops_per_token_ + pairs * attention_flops_per_pair_;
}

namespace {
double Smooth(double old_rate, double sample, double weight) {
  return old_rate > 0 ? (1 - weight) * old_rate + weight * sample : sample;
}
}  // namespace

void ReuseEstimator::ObserveLoad(uint64_t bytes, double seconds) {
  if (options_.get_bytes_per_s > 0 || bytes == 0 || !(seconds > 0)) return;
  get_bytes_per_s_ = Smooth(get_bytes_per_s_, bytes / seconds, options_.smoothing);
}

void ReuseEstimator::ObservePrefill(uint32_t begin, uint32_t end, double seconds) {
  if (options_.prefill_flops_per_s > 0 || end <= begin || !(seconds > 0)) return;
  prefill_flops_per_s_ =
      Smooth(prefill_flops_per_s_, PrefillFlops(begin, end) / seconds, options_.smoothing);
}

absl::StatusOr<ReuseDecision> ReuseEstimator::Decide(uint32_t prefix_tokens, uint64_t bytes,
                                                     uint32_t batches) const {
  if (!knows_bandwidth() || !knows_prefill()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "reuse estimator: ", knows_bandwidth() ? "" : "store bandwidth ",
        knows_prefill() ? "" : "prefill speed ", "not measured yet"));
  }
  ReuseDecision d;
  d.prefix_tokens = prefix_tokens;
  d.bytes = bytes;
  d.load_s = bytes / get_bytes_per_s_ + batches * options_.batch_latency_s;
  d.recompute_s = PrefillFlops(0, prefix_tokens) / prefill_flops_per_s_;
  d.load = prefix_tokens > 0 && d.load_s < d.recompute_s;
  return d;
}

}  // namespace kvtier::model
