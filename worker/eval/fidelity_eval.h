// The fidelity harness behind kvtier-eval: records one long prompt's real
// Q/K/V with the full cache, evaluates page estimators and every
// (policy, budget, allocator) offline on that trace, and runs shorter
// end-to-end passkey cases through the model under each policy.
//
// Thread-safety: none.
#ifndef KVTIER_WORKER_EVAL_FIDELITY_EVAL_H_
#define KVTIER_WORKER_EVAL_FIDELITY_EVAL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/loader/model_loader.h"

namespace kvtier::eval {

struct FidelityOptions {
  std::string trace_path;              // written (or reused when reuse_trace)
  bool reuse_trace = false;
  uint32_t context = 8192;             // trace: prompt + decode tokens
  uint32_t trace_steps = 16;           // trace decode steps
  uint32_t page_size = 16;
  std::vector<uint32_t> budget_fractions = {4, 8, 16};  // budget = context / f
  std::vector<std::string> policies = {"full", "sliding_window", "streaming_llm", "h2o",
                                       "tova", "quest", "arkvale", "arkv"};
  std::vector<std::string> allocators = {"uniform", "xkv", "lukv"};
  std::vector<std::string> allocator_policies = {"arkvale", "h2o"};
  std::vector<uint32_t> recall_ks = {1, 8, 32};
  uint32_t e2e_context = 2048;         // passkey prompt size (0: skip e2e)
  uint32_t e2e_cases = 2;
  uint64_t seed = 42;
  std::string work_dir = "/tmp";
  // Where the worker's KV pools and decode attention run: "cpu", "cuda",
  // "cuda:N" (model::WorkerBackendOptions::device).
  std::string device = "cpu";
};

// Everything measured, as JSON text (schema in the README).
absl::StatusOr<std::string> RunFidelity(const model::LoadedModel& m, const FidelityOptions& o);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_FIDELITY_EVAL_H_
