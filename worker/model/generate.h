// Generate: prompt in, text out, through a Transformer and its attention
// backend.
//
// Follows llama2.c's run.c loop: `steps` counts positions including the
// prompt; the prompt is prefilled, then each step samples a token, stops on
// a stop token (not emitted), emits its text and, while positions remain,
// runs it at the next position.
#ifndef KVTIER_WORKER_MODEL_GENERATE_H_
#define KVTIER_WORKER_MODEL_GENERATE_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "worker/model/sampler.h"
#include "worker/model/tokenizer/tokenizer.h"
#include "worker/model/transformer.h"

namespace kvtier::model {

struct GenerationOptions {
  // Positions to run, prompt included. Must be at least the prompt's token
  // count and at most the model's context. Default 256.
  int steps = 256;
  // Prepend the tokenizer's BOS to the prompt. Default true (llama2.c).
  bool add_bos = true;
  // Sampled tokens that end generation (e.g. EOS; llama2.c uses BOS).
  std::vector<int> stop_tokens;
  // Sequence id used on the attention backend (started and ended here).
  SequenceId sequence = 0;
  // Called with each emitted piece of text as it is produced; may be empty.
  std::function<void(absl::string_view)> on_text;
  // Called once after the prompt with its tokens and the next-token logits
  // (for comparisons with other engines); may be empty.
  std::function<void(absl::Span<const int>, absl::Span<const float>)>
      on_prompt_logits;
  // Prefills the prompt (its tokens, from position 0) in place of
  // Transformer::Prefill and returns the logits after it, e.g. loading a
  // stored prefix first (prefix_reuse.h); may be empty.
  std::function<absl::StatusOr<absl::Span<const float>>(SequenceId,
                                                        absl::Span<const int>)>
      prefill;
};

struct GenerationResult {
  std::string text;          // everything emitted
  std::vector<int> tokens;   // prompt tokens then generated tokens
  int prompt_tokens = 0;
  int generated_tokens = 0;  // emitted (the stop token excluded)
  double prefill_seconds = 0;  // prompt in, first token's logits out
  // The prompt's hand-off to the backend (AttentionBackend::HandOffPrompt),
  // run after the first token is emitted; in neither figure around it.
  double handoff_seconds = 0;
  double decode_seconds = 0;
};

// INVALID_ARGUMENT on an empty token sequence (empty prompt and no BOS) or
// bad steps; otherwise the first error of the backend or the model.
absl::StatusOr<GenerationResult> Generate(Transformer& model,
                                          AttentionBackend& backend,
                                          const Tokenizer& tokenizer,
                                          Sampler& sampler,
                                          absl::string_view prompt,
                                          const GenerationOptions& options);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_GENERATE_H_
