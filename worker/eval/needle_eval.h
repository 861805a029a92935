// `kvtier-eval needles`: the retrieval suite of needle_suite.h run through
// the model under every (policy, budget), beside the exact dense reference.
//
// For each context length, `cases` prompts are fitted to the length (the
// answer's tokens fit after them), the dense reference runs each once with
// the answer forced, and each policy at each budget (context / fraction
// tokens per layer; "full" runs once, at the whole context) runs each case
// with the answer forced. A case is correct when every answer token is the
// run's greedy choice. Rows report the cases, accuracy with its 95% Wilson
// interval, the same split by task, filler, key format and depth, greedy
// agreement and KL with the reference, and the peak KV bytes resident (all
// layers) as a fraction of what the full cache holds for the case. With
// allocators, each policy that budgets layers runs once per allocator.
//
// Thread-safety: none.
#ifndef KVTIER_WORKER_EVAL_NEEDLE_EVAL_H_
#define KVTIER_WORKER_EVAL_NEEDLE_EVAL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/eval/needle_suite.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::eval {

struct NeedleEvalOptions {
  NeedleSuiteOptions suite;
  std::vector<std::string> policies = {"full", "streaming_llm", "h2o", "tova",
                                       "quest", "arkvale", "arkv"};
  std::vector<uint32_t> budget_fractions = {8};
  // kLayerTokens: context / fraction tokens in every budgeted layer (the
  // papers' convention). kResidentMemory: all layers' KV bytes within
  // 1 / fraction of the full cache's (WorkerBackendOptions::budget_unit):
  // ArkVale and Quest keep no dense layers, Quest pages out what it does
  // not attend, ARKV pays for its quantized tier.
  model::BudgetUnit budget_unit = model::BudgetUnit::kLayerTokens;
  // Layer budget allocators: "uniform" (budget_tokens in every layer),
  // "xkv", "lukv". The latter two are profiled, per context, on a
  // calibration case drawn apart from the test cases, and give each layer
  // its share of budget x layers pages (at least 2; ArkVale 8, which its
  // top-k needs). Quest and the full cache keep every page and run uniform.
  std::vector<std::string> allocators = {"uniform"};
  int page_size = 16;
  // Element type of the page digests (model::WorkerBackendOptions).
  DType digest_dtype = DType::kF32;
  // Where the worker's KV pools and decode attention run: "cpu", "cuda",
  // "cuda:N" (model::WorkerBackendOptions::device).
  std::string device = "cpu";
  uint64_t seed = 42;
  std::string work_dir = "/tmp";  // the calibration trace and profiles, removed after use
};

// The report as JSON text (schema in worker/eval/README.md). A policy that
// refuses a budget gets a row with "error" and the sweep goes on.
absl::StatusOr<std::string> RunNeedleEval(const model::LoadedModel& m,
                                          const NeedleEvalOptions& o);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_NEEDLE_EVAL_H_
