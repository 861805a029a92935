#include "worker/model/generate.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace kvtier::model {
namespace {

absl::Status RunLoop(Transformer& model, AttentionBackend& backend,
                     const Tokenizer& tokenizer, Sampler& sampler,
                     const GenerationOptions& options, GenerationResult& result) {
  const absl::Time t0 = absl::Now();
  const int n = result.tokens.size();
  ASSIGN_OR_RETURN(absl::Span<const float> logits,
                   options.prefill
                       ? options.prefill(options.sequence, result.tokens)
                       : model.Prefill(options.sequence, result.tokens, 0));
  absl::Time t1 = absl::Now();
  result.prefill_seconds = absl::ToDoubleSeconds(t1 - t0);
  if (options.on_prompt_logits) options.on_prompt_logits(result.tokens, logits);
  int prev = result.tokens.back();
  for (int pos = n; pos <= options.steps; ++pos) {
    const int next = sampler.Sample(logits);
    if (std::find(options.stop_tokens.begin(), options.stop_tokens.end(),
                  next) != options.stop_tokens.end()) {
      break;
    }
    result.tokens.push_back(next);
    ++result.generated_tokens;
    const std::string piece = tokenizer.Decode(prev, next);
    result.text += piece;
    if (options.on_text) options.on_text(piece);
    if (pos == n) {
      // The first token is out: now the prompt's hand-off, timed apart.
      const absl::Time th = absl::Now();
      RETURN_IF_ERROR(backend.HandOffPrompt(options.sequence));
      const absl::Duration handoff = absl::Now() - th;
      result.handoff_seconds = absl::ToDoubleSeconds(handoff);
      t1 += handoff;
    }
    if (pos == options.steps) break;  // no position left to run it at
    ASSIGN_OR_RETURN(logits, model.Forward(options.sequence, next, pos));
    prev = next;
  }
  result.decode_seconds = absl::ToDoubleSeconds(absl::Now() - t1);
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GenerationResult> Generate(Transformer& model,
                                          AttentionBackend& backend,
                                          const Tokenizer& tokenizer,
                                          Sampler& sampler,
                                          absl::string_view prompt,
                                          const GenerationOptions& options) {
  GenerationResult result;
  ASSIGN_OR_RETURN(result.tokens, tokenizer.Encode(prompt, options.add_bos));
  result.prompt_tokens = result.tokens.size();
  if (result.tokens.empty()) {
    return absl::InvalidArgumentError(
        "nothing to run: the prompt is empty and no BOS is added");
  }
  if (options.steps < result.prompt_tokens ||
      options.steps > model.config().max_positions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "steps ", options.steps, " must be at least the ", result.prompt_tokens,
        " prompt tokens and be at most the context of ",
        model.config().max_positions));
  }
  RETURN_IF_ERROR(backend.StartSequence(options.sequence));
  absl::Status status = RunLoop(model, backend, tokenizer, sampler, options, result);
  absl::Status end = backend.EndSequence(options.sequence);
  RETURN_IF_ERROR(status);
  RETURN_IF_ERROR(end);
  return result;
}

}  // namespace kvtier::model
