// `kvtier-eval continuation`: how far each policy drifts from the full
// cache over long continuations, and whether it degenerates into loops.
//
// Prompts are needle-suite cases (needle_suite.h; prose fillers by default)
// fitted to `context - max(lengths)` tokens. For each prompt the dense
// reference generates max(lengths) greedy tokens. Each policy at each budget
// (`context / fraction` tokens per layer) then
//   - is teacher-forced on the reference's tokens: greedy agreement and mean
//     KL(reference || policy) of the next-token distributions over the first
//     L tokens, for each L in `lengths`;
//   - generates max(lengths) greedy tokens on its own: the tokens it shares
//     with the reference before the first difference, and its repetition,
//     the share of its 4-grams that repeat an earlier 4-gram of the same
//     continuation (a loop drives it towards 1; the reference's own is
//     reported beside it).
//
// Thread-safety: none.
#ifndef KVTIER_WORKER_EVAL_CONTINUATION_EVAL_H_
#define KVTIER_WORKER_EVAL_CONTINUATION_EVAL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/eval/needle_suite.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::eval {

struct ContinuationOptions {
  uint32_t context = 1024;  // prompt + the longest continuation, tokens
  std::vector<uint32_t> lengths = {16, 64, 256};
  uint32_t prompts = 3;
  std::vector<NeedleTask> tasks = {NeedleTask::kPasskey, NeedleTask::kKeyValue};
  std::vector<NeedleFiller> fillers = {NeedleFiller::kTravel, NeedleFiller::kWorkshop};
  std::vector<std::string> policies = {"full", "streaming_llm", "h2o", "tova",
                                       "quest", "arkvale", "arkv"};
  std::vector<uint32_t> budget_fractions = {8};
  // What the budget bounds (NeedleEvalOptions::budget_unit).
  model::BudgetUnit budget_unit = model::BudgetUnit::kLayerTokens;
  int page_size = 16;
  uint64_t seed = 42;
  // Where the worker's KV pools and decode attention run: "cpu", "cuda",
  // "cuda:N" (model::WorkerBackendOptions::device).
  std::string device = "cpu";
};

// The share of the 4-grams of `tokens` equal to an earlier 4-gram of them;
// 0 for fewer than five tokens.
double RepeatedFourGrams(const std::vector<int>& tokens);

// The report as JSON text (schema in worker/eval/README.md).
absl::StatusOr<std::string> RunContinuationEval(const model::LoadedModel& m,
                                                const ContinuationOptions& o);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_CONTINUATION_EVAL_H_
