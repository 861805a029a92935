#include "worker/model/sampler.h"

#include <cassert>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace kvtier::model {

int ArgMax(absl::Span<const float> values) {
  assert(!values.empty());
  int best = 0;
  for (size_t i = 1; i < values.size(); ++i) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

absl::StatusOr<Sampler> Sampler::Create(float temperature, uint64_t seed) {
  if (!std::isfinite(temperature) || temperature < 0.0f) {
    return absl::InvalidArgumentError(absl::StrCat(
        "temperature ", temperature, " must be finite and >= 0"));
  }
  return Sampler(temperature, seed);
}

int Sampler::Sample(absl::Span<const float> logits) {
  assert(!logits.empty());
  if (temperature_ == 0.0f) return ArgMax(logits);
  const float max_logit = logits[ArgMax(logits)];
  probs_.resize(logits.size());
  double sum = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    probs_[i] = std::exp((logits[i] - max_logit) / temperature_);
    sum += probs_[i];
  }
  // 53 random bits -> a uniform double in [0, 1).
  const double coin =
      static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0) * sum;
  double cdf = 0.0;
  for (size_t i = 0; i < probs_.size(); ++i) {
    cdf += probs_[i];
    if (coin < cdf) return i;
  }
  return logits.size() - 1;  // rounding left the coin just past the end
}

}  // namespace kvtier::model
