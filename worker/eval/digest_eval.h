// `kvtier-eval digests`: the digest study (digest_study.h) on the model's
// real queries and keys. For each context length, the needle suite's cases
// are fitted to the length and run once through the exact dense backend with
// the answer forced while a trace records them; every layer's last prompt
// query and answer-step queries are then ranked by every digest, page size
// and selection granularity. The queries that matter most for retrieval are
// the ones that produce the answer, so these are the samples.
//
// Thread-safety: none.
#ifndef KVTIER_WORKER_EVAL_DIGEST_EVAL_H_
#define KVTIER_WORKER_EVAL_DIGEST_EVAL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/eval/digest_study.h"
#include "worker/eval/needle_suite.h"
#include "worker/model/loader/model_loader.h"

namespace kvtier::eval {

struct DigestEvalOptions {
  NeedleSuiteOptions suite;
  DigestStudyOptions study;
  std::string work_dir = "/tmp";  // one trace at a time, removed after use
};

// JSON: {"model": {...}, "contexts": [{"context", "cases",
// "mean_prompt_tokens", "queries" (ranked per page size), "rows":
// DigestStudy::Json()}]}.
absl::StatusOr<std::string> RunDigestEval(const model::LoadedModel& m,
                                          const DigestEvalOptions& o);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_DIGEST_EVAL_H_
