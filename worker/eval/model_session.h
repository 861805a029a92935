// Model runs for the fidelity harness and the long-context demo: a loaded
// model, its tokenizer and helpers that run one prompt through any
// AttentionBackend with the continuation forced (teacher forcing), so a
// budgeted run is compared with the full cache on the same tokens.
//
// Thread-safety: none; one run at a time.
#ifndef KVTIER_WORKER_EVAL_MODEL_SESSION_H_
#define KVTIER_WORKER_EVAL_MODEL_SESSION_H_

#include <algorithm>
#include <functional>
#include <numeric>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/eval/needle_suite.h"
#include "worker/eval/passkey.h"
#include "worker/model/attention_backend.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::eval {

// Writes "kvtier-eval: LINE" to stderr at once (the eval's progress).
void Progress(const std::string& line);

// Logits after the prompt and after each forced token but the last:
// row i predicts forced[i]. Rows are [vocab].
struct ForcedRun {
  std::vector<std::vector<float>> logits;
  double prefill_seconds = 0;  // the prompt's hand-off to the cache included
  double decode_seconds = 0;
};

// Called after each decode step with the number of steps done.
using StepCallback = std::function<void(int done)>;

// Prefills `prompt` (token ids, BOS included when the model wants it) on
// `backend` and feeds `forced` one token at a time. When `forced` is empty
// the run continues greedily for `greedy_steps` tokens instead and
// `generated` receives them. The sequence is started and ended here. The
// model's dense layers run on `dense_device` (TransformerOptions::device).
// INVALID_ARGUMENT when the tokens do not fit the model's context.
absl::StatusOr<ForcedRun> RunForced(const model::LoadedModel& m, model::AttentionBackend& backend,
                                    const std::vector<int>& prompt,
                                    const std::vector<int>& forced, int greedy_steps,
                                    std::vector<int>* generated,
                                    const StepCallback& on_step = nullptr,
                                    const std::string& dense_device = "cpu");

// Tokens of `text` without BOS (continuations).
absl::StatusOr<std::vector<int>> Encode(const model::LoadedModel& m, const std::string& text,
                                        bool add_bos);

// The text of `tokens` continuing after token `prev`.
std::string DecodeText(const model::LoadedModel& m, int prev, const std::vector<int>& tokens);

// INVALID_ARGUMENT, naming `command`, for a policy the worker backend does
// not know, a budget fraction of 0 or a page size below 1: a sweep checks
// them before it runs anything.
absl::Status CheckSweep(const std::string& command, const std::vector<std::string>& policies,
                        const std::vector<uint32_t>& budget_fractions, int page_size);

// One worker policy at one budget on `prompt` with `answer` forced,
// compared token by token with `ref`, the full cache's run on the same
// tokens (ref.logits.size() == answer.size()).
struct PolicyRun {
  bool correct = false;  // every answer token was the run's argmax
  std::vector<uint8_t> step_agree;  // per step: argmax equals ref's
  std::vector<double> step_kl;      // per step: KL(ref || run)
  uint32_t steps() const { return static_cast<uint32_t>(step_agree.size()); }
  // Steps whose argmax equals ref's.
  uint32_t agree() const {
    return static_cast<uint32_t>(std::count(step_agree.begin(), step_agree.end(), 1));
  }
  // KL(ref || run) summed over the steps.
  double kl() const { return std::accumulate(step_kl.begin(), step_kl.end(), 0.0); }
  uint64_t pages_recalled = 0;
  uint64_t bytes_recalled = 0;
  double decode_seconds = 0;
  // The most KV bytes held at once: the layers' pools (fp32 pages) and
  // the policy's own tier (WorkerAttentionBackend::peak_resident_bytes).
  uint64_t peak_resident_bytes = 0;
  // The same per layer (WorkerAttentionBackend::peak_resident_layer_bytes).
  std::vector<uint64_t> peak_resident_layer_bytes;
  // The most bytes of digests it scored pages by at once
  // (WorkerAttentionBackend::peak_digest_bytes).
  uint64_t peak_digest_bytes = 0;
  // Each layer's budget in pages as the worker applied it
  // (WorkerAttentionBackend::layer_budgets).
  std::vector<uint32_t> layer_budget_pages;
};
// How a policy run is budgeted.
struct RunBudget {
  std::string policy;
  // Per layer (0: the context), or all layers' memory (`unit`).
  int tokens = 0;
  model::BudgetUnit unit = model::BudgetUnit::kLayerTokens;
  // An allocator's per-layer budgets, one per layer (empty: `tokens`).
  std::vector<int> layer_tokens = {};
  int page_size = 16;
  DType digest_dtype = DType::kF32;  // WorkerBackendOptions::digest_dtype
  // The longest sequence the worker is sized for (0: the model's context):
  // ArkVale's dense layers keep that much (under kLayerTokens).
  uint32_t context = 0;
  std::string device = "cpu";  // WorkerBackendOptions::device
};
// A worker backend for one sequence under `b`.
absl::StatusOr<std::unique_ptr<model::WorkerAttentionBackend>> MakeWorker(
    const model::LoadedModel& m, const RunBudget& b);
absl::StatusOr<PolicyRun> RunPolicy(const model::LoadedModel& m, const std::vector<int>& prompt,
                                    const std::vector<int>& answer, const ForcedRun& ref,
                                    const RunBudget& b);

// A passkey prompt of at most `max_tokens` tokens (BOS included): the filler
// starts at 4 characters per token (Quest) and shrinks by the measured ratio.
struct PasskeyPrompt {
  PasskeyCase c;
  std::vector<int> tokens{};
  std::vector<int> answer{};
};
// INTERNAL if it cannot be fitted.
absl::StatusOr<PasskeyPrompt> FitPasskeyPrompt(const model::LoadedModel& m, PasskeyCase c,
                                              uint32_t max_tokens);

// A needle-suite case (needle_suite.h) fitted so that its prompt and answer
// take at most `max_tokens` tokens: the filler starts at 4 characters per
// token and shrinks by the measured ratio. INVALID_ARGUMENT if it cannot.
struct NeedlePrompt {
  NeedleCase c;
  NeedleText text;
  std::vector<int> tokens{};  // the prompt, BOS included when the model wants it
  std::vector<int> answer{};
};
absl::StatusOr<NeedlePrompt> FitNeedlePrompt(const model::LoadedModel& m, const NeedleCase& c,
                                             uint32_t max_tokens);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_MODEL_SESSION_H_
