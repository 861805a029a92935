#include "worker/eval/digest_eval.h"

#include <unistd.h>

#include <filesystem>
#include <memory>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "worker/eval/model_session.h"
#include "worker/eval/trace_recorder.h"
#include "worker/model/dense_attention_backend.h"

namespace kvtier::eval {

absl::StatusOr<std::string> RunDigestEval(const model::LoadedModel& m,
                                          const DigestEvalOptions& o) {
  RETURN_IF_ERROR(
      o.suite.Validate("digests", static_cast<uint32_t>(m.weights.config.max_positions)));
  const model::AttentionShape shape = m.weights.config.attention_shape();
  const auto q_heads = static_cast<uint32_t>(shape.n_heads);
  const auto kv_heads = static_cast<uint32_t>(shape.n_kv_heads);
  const auto head_dim = static_cast<uint32_t>(shape.head_dim);
  // Refuses bad page sizes and ks before any prompt runs.
  RETURN_IF_ERROR(DigestStudy::Create(q_heads, kv_heads, head_dim, o.study).status());
  std::vector<NeedleCase> cases;
  ASSIGN_OR_RETURN(cases, o.suite.Cases());
  std::unique_ptr<model::DenseAttentionBackend> dense;
  ASSIGN_OR_RETURN(dense, model::DenseAttentionBackend::Create(shape));
  const std::string trace_path =
      (std::filesystem::path(o.work_dir) / absl::StrCat("kvtier-digests.", getpid(), ".kvtrace"))
          .string();
  absl::Cleanup remove_trace = [&trace_path] {
    std::error_code ignored;
    std::filesystem::remove(trace_path, ignored);
  };
  const absl::Time t0 = absl::Now();
  std::string contexts = "[";
  for (uint32_t context : o.suite.contexts) {
    ASSIGN_OR_RETURN(DigestStudy study, DigestStudy::Create(q_heads, kv_heads, head_dim, o.study));
    uint64_t prompt_tokens = 0, queries = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
      ASSIGN_OR_RETURN(NeedlePrompt p, FitNeedlePrompt(m, cases[i], context));
      // The first answer token comes from the prefill; each later one is a
      // decode step.
      const uint32_t steps = static_cast<uint32_t>(p.answer.size()) - 1;
      std::unique_ptr<TraceRecordingBackend> rec;
      ASSIGN_OR_RETURN(rec, TraceRecordingBackend::Create(dense.get(), trace_path,
                                                          p.tokens.size(), 1, steps));
      RETURN_IF_ERROR(RunForced(m, *rec, p.tokens, p.answer, 0, nullptr).status());
      RETURN_IF_ERROR(rec->Finish());
      ASSIGN_OR_RETURN(TraceReader r, TraceReader::Open(trace_path));
      RETURN_IF_ERROR(study.AddTrace(r));
      prompt_tokens += p.tokens.size();
      queries += uint64_t{1 + steps} * static_cast<uint64_t>(shape.n_layers);
      Progress(absl::StrFormat("digests %u: case %zu/%zu (%zu prompt tokens, %u answer steps), "
                               "%.0f s", context, i + 1, cases.size(), p.tokens.size(), steps,
                               absl::ToDoubleSeconds(absl::Now() - t0)));
    }
    absl::StrAppendFormat(&contexts,
                          "%s\n  {\"context\": %u, \"cases\": %zu, \"mean_prompt_tokens\": %.0f, "
                          "\"queries\": %llu, \"rows\": %s}",
                          contexts.size() > 1 ? "," : "", context, cases.size(),
                          static_cast<double>(prompt_tokens) / cases.size(),
                          static_cast<unsigned long long>(queries), study.Json());
  }
  return absl::StrFormat(
      "{\"model\": {\"layers\": %d, \"q_heads\": %d, \"kv_heads\": %d, \"head_dim\": %d},\n"
      " \"contexts\": %s\n]}\n",
      shape.n_layers, shape.n_heads, shape.n_kv_heads, shape.head_dim, contexts);
}

}  // namespace kvtier::eval
