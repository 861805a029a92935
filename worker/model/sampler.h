// Sampler: picks the next token from logits.
//
// temperature == 0: greedy, the first index of the largest logit (as
// llama2.c). temperature > 0: a draw from softmax(logits / temperature)
// with a seeded RNG, so a (seed, logits sequence) pair always gives the
// same tokens.
//
// Thread-safety: none (the RNG is state).
#ifndef KVTIER_WORKER_MODEL_SAMPLER_H_
#define KVTIER_WORKER_MODEL_SAMPLER_H_

#include <cstdint>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier::model {

class Sampler {
 public:
  // INVALID_ARGUMENT unless temperature is finite and >= 0.
  static absl::StatusOr<Sampler> Create(float temperature, uint64_t seed);

  // REQUIRES: !logits.empty().
  int Sample(absl::Span<const float> logits);

  float temperature() const { return temperature_; }

 private:
  Sampler(float temperature, uint64_t seed)
      : temperature_(temperature), rng_(seed) {}

  float temperature_;
  std::mt19937_64 rng_;
  std::vector<float> probs_;
};

// Index of the first maximum.
int ArgMax(absl::Span<const float> values);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_SAMPLER_H_
