#include "worker/eval/model_session.h"

#include <algorithm>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "worker/eval/fidelity_metrics.h"
#include "worker/model/transformer.h"

namespace kvtier::eval {

void Progress(const std::string& line) {
  std::fprintf(stderr, "kvtier-eval: %s\n", line.c_str());
  std::fflush(stderr);
}

std::string DecodeText(const model::LoadedModel& m, int prev, const std::vector<int>& tokens) {
  std::string out;
  for (int t : tokens) {
    out += m.tokenizer->Decode(prev, t);
    prev = t;
  }
  return out;
}

absl::StatusOr<std::vector<int>> Encode(const model::LoadedModel& m, const std::string& text,
                                        bool add_bos) {
  return m.tokenizer->Encode(text, add_bos && m.add_bos);
}

absl::StatusOr<ForcedRun> RunForced(const model::LoadedModel& m, model::AttentionBackend& backend,
                                    const std::vector<int>& prompt,
                                    const std::vector<int>& forced, int greedy_steps,
                                    std::vector<int>* generated, const StepCallback& on_step,
                                    const std::string& dense_device) {
  const int steps = forced.empty() ? greedy_steps : static_cast<int>(forced.size());
  if (prompt.empty() || steps < 0 ||
      prompt.size() + steps > static_cast<size_t>(m.weights.config.max_positions)) {
    return absl::InvalidArgumentError(
        absl::StrCat("a prompt of ", prompt.size(), " tokens and ", steps,
                     " steps do not fit the context of ", m.weights.config.max_positions));
  }
  std::unique_ptr<model::Transformer> t;
  ASSIGN_OR_RETURN(t, model::Transformer::Create(&m.weights, &backend, {.device = dense_device}));
  constexpr model::SequenceId kSeq = 1;
  RETURN_IF_ERROR(backend.StartSequence(kSeq));
  ForcedRun run;
  absl::Time t0 = absl::Now();
  absl::StatusOr<absl::Span<const float>> logits = t->Prefill(kSeq, prompt, 0);
  if (!logits.ok()) return logits.status();
  // The logits stay valid: the hand-off touches only the backend.
  RETURN_IF_ERROR(backend.HandOffPrompt(kSeq));
  run.prefill_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  t0 = absl::Now();
  int pos = static_cast<int>(prompt.size());
  for (int i = 0; i < steps; ++i) {
    run.logits.emplace_back(logits->begin(), logits->end());
    const int next = forced.empty() ? Argmax(*logits) : forced[i];
    if (generated != nullptr && forced.empty()) generated->push_back(next);
    if (i + 1 == steps) break;
    logits = t->Forward(kSeq, next, pos++);
    if (!logits.ok()) return logits.status();
    if (on_step) on_step(i + 1);
  }
  run.decode_seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  RETURN_IF_ERROR(backend.EndSequence(kSeq));
  return run;
}

absl::Status CheckSweep(const std::string& command, const std::vector<std::string>& policies,
                        const std::vector<uint32_t>& budget_fractions, int page_size) {
  const std::vector<std::string>& known = model::WorkerPolicyNames();
  for (const std::string& p : policies) {
    if (std::find(known.begin(), known.end(), p) == known.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat(command, ": unknown policy ", JsonQuoted(p)));
    }
  }
  for (uint32_t f : budget_fractions) {
    if (f == 0) {
      return absl::InvalidArgumentError(absl::StrCat(command, ": a budget fraction of 0"));
    }
  }
  if (page_size < 1) {
    return absl::InvalidArgumentError(absl::StrCat(command, ": page_size below 1"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<model::WorkerAttentionBackend>> MakeWorker(
    const model::LoadedModel& m, const RunBudget& b) {
  model::AttentionShape shape = m.weights.config.attention_shape();
  if (b.context > static_cast<uint32_t>(shape.max_positions)) {
    return absl::InvalidArgumentError(absl::StrCat("a worker for ", b.context,
                                                   " tokens exceeds the model's context of ",
                                                   shape.max_positions));
  }
  if (b.context > 0) shape.max_positions = static_cast<int>(b.context);
  return model::WorkerAttentionBackend::Create(
      shape, {.policy = b.policy, .budget_tokens = b.tokens, .budget_unit = b.unit,
              .layer_budget_tokens = b.layer_tokens, .page_size = b.page_size,
              .digest_dtype = b.digest_dtype, .max_sequences = 1, .device = b.device});
}

absl::StatusOr<PolicyRun> RunPolicy(const model::LoadedModel& m, const std::vector<int>& prompt,
                                    const std::vector<int>& answer, const ForcedRun& ref,
                                    const RunBudget& budget) {
  if (ref.logits.size() != answer.size()) {
    return absl::InvalidArgumentError(absl::StrCat("reference run of ", ref.logits.size(),
                                                   " steps for an answer of ", answer.size()));
  }
  std::unique_ptr<model::WorkerAttentionBackend> b;
  ASSIGN_OR_RETURN(b, MakeWorker(m, budget));
  ForcedRun run;
  ASSIGN_OR_RETURN(run, RunForced(m, *b, prompt, answer, 0, nullptr, nullptr, budget.device));
  PolicyRun out;
  out.correct = true;
  for (size_t i = 0; i < run.logits.size(); ++i) {
    NextTokenComparison c;
    ASSIGN_OR_RETURN(c, CompareNextToken(ref.logits[i], run.logits[i]));
    out.step_agree.push_back(c.same_argmax ? 1 : 0);
    out.step_kl.push_back(c.kl);
    out.correct = out.correct && Argmax(run.logits[i]) == answer[i];
  }
  out.pages_recalled = b->stats().pages_recalled;
  out.bytes_recalled = b->stats().bytes_recalled;
  out.decode_seconds = run.decode_seconds;
  out.peak_resident_bytes = b->peak_resident_bytes();
  out.peak_resident_layer_bytes = b->peak_resident_layer_bytes();
  out.peak_digest_bytes = b->peak_digest_bytes();
  out.layer_budget_pages = b->layer_budgets();
  return out;
}

absl::StatusOr<PasskeyPrompt> FitPasskeyPrompt(const model::LoadedModel& m, PasskeyCase c,
                                        uint32_t max_tokens) {
  c.filler_chars = 4 * max_tokens;
  for (int attempt = 0; attempt < 8; ++attempt) {
    std::string text;
    ASSIGN_OR_RETURN(text, BuildPasskeyPrompt(c));
    PasskeyPrompt p{.c = c};
    ASSIGN_OR_RETURN(p.tokens, Encode(m, text, true));
    if (p.tokens.size() <= max_tokens) {
      ASSIGN_OR_RETURN(p.answer, Encode(m, PasskeyAnswer(c.passkey), false));
      return p;
    }
    c.filler_chars = static_cast<uint32_t>(c.filler_chars * 0.995 * max_tokens / p.tokens.size());
  }
  return absl::InternalError("passkey prompt does not shrink to the token target");
}

absl::StatusOr<NeedlePrompt> FitNeedlePrompt(const model::LoadedModel& m, const NeedleCase& c,
                                             uint32_t max_tokens) {
  NeedlePrompt p;
  p.c = c;
  uint32_t chars = 4 * max_tokens;
  for (int attempt = 0; attempt < 10; ++attempt) {
    ASSIGN_OR_RETURN(p.text, BuildNeedleText(c, chars));
    ASSIGN_OR_RETURN(p.tokens, Encode(m, p.text.prompt, true));
    ASSIGN_OR_RETURN(p.answer, Encode(m, p.text.answer, false));
    const size_t total = p.tokens.size() + p.answer.size();
    if (total <= max_tokens) return p;
    chars = static_cast<uint32_t>(chars * 0.99 * max_tokens / total);
  }
  return absl::InvalidArgumentError(absl::StrCat("a ", NeedleTaskName(c.task),
                                                 " case does not fit ", max_tokens, " tokens"));
}

}  // namespace kvtier::eval
