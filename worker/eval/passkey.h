// Passkey retrieval prompts (ALGORITHMS.md §7, the landmark-attention
// template used by ArkVale and Quest): a task line, filler, the passkey
// sentence at a chosen depth, more filler, then the question.
//
//   <task> <prefix filler> The pass key is N. Remember it. N is the pass key.
//   <suffix filler> What is the pass key? The pass key is
//
// The filler is "The grass is green. ... There and back again." repeated and
// cut to a character count; the prefix takes round(depth * filler_chars)
// characters of it and the suffix the rest, both cut from the start of the
// repeated string (as in Quest's script). Quest sizes the filler at 4
// characters per target token.
//
// The answer is judged as in ArkVale: the greedy continuation must equal the
// tokens of " N" exactly (PasskeyAnswer gives the text to tokenize).
//
// Thread-safety: stateless.
#ifndef KVTIER_WORKER_EVAL_PASSKEY_H_
#define KVTIER_WORKER_EVAL_PASSKEY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace kvtier::eval {

struct PasskeyCase {
  uint32_t filler_chars = 0;
  double depth = 0;       // 0..1: where the passkey sits in the filler
  uint32_t passkey = 0;   // 1..50000
};

// INVALID_ARGUMENT when depth is outside [0, 1] or the passkey outside
// [1, 50000].
absl::StatusOr<std::string> BuildPasskeyPrompt(const PasskeyCase& c);

// The text whose tokens a correct answer repeats: " N".
std::string PasskeyAnswer(uint32_t passkey);

// `count` cases at depths i / (count - 1) (0 to 100%; 0 for one case),
// passkeys drawn uniformly in [1, 50000] from a generator seeded with `seed`.
std::vector<PasskeyCase> PasskeyCases(uint32_t filler_chars, uint32_t count, uint64_t seed);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_PASSKEY_H_
