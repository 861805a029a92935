#include "worker/eval/fidelity_eval.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "worker/eval/allocator_profiles.h"
#include "worker/eval/digest_study.h"
#include "worker/eval/model_session.h"
#include "worker/eval/passkey.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/worker_attention_backend.h"
#include "worker/sim/simulator.h"

namespace kvtier::eval {
namespace {

constexpr uint32_t kPromptQueries = 32;
// Allocators give each layer at least this many pages: ArkVale's top-k (half
// the budget) must cover its sink and window pages (3).
constexpr uint32_t kMinLayerPages = 8;

// Recall and mass of every digest kind and selection over all (step, layer)
// records of the trace, at the recall ks and the budgets.
absl::StatusOr<std::string> EvaluateEstimators(const TraceReader& r, const FidelityOptions& o) {
  const TraceHeader& h = r.header();
  DigestStudyOptions so;
  so.page_sizes = {o.page_size};
  so.ks = o.recall_ks;
  so.budget_fractions = o.budget_fractions;
  ASSIGN_OR_RETURN(DigestStudy study,
                   DigestStudy::Create(h.n_q_heads, h.n_kv_heads, h.head_dim, so));
  const absl::Time t0 = absl::Now();
  RETURN_IF_ERROR(study.AddTrace(r, [&](uint32_t l) {
    if ((l + 1) % 10 == 0 || l + 1 == h.n_layers) {
      Progress(absl::StrFormat("estimators: layer %u/%u (%.0f s)", l + 1, h.n_layers,
                               absl::ToDoubleSeconds(absl::Now() - t0)));
    }
  }));
  return study.Json();
}

absl::StatusOr<std::string> SimulateOne(const TraceReader& r, const FidelityOptions& o,
                                        const std::string& policy, uint32_t fraction,
                                        const std::string& allocator, const std::string& path) {
  const TraceHeader& h = r.header();
  const uint32_t context = h.prompt_len + h.decode_steps;
  // The full cache's "budget" is the whole context.
  const uint32_t budget = policy == "full"
                              ? (context + o.page_size - 1) / o.page_size
                              : std::max<uint32_t>(2, o.context / fraction / o.page_size);
  worker::SimOptions s;
  s.policy = policy;
  s.page_size = o.page_size;
  s.pool_dtype = DType::kF32;
  s.budget_pages = budget;
  s.arkvale.topk_pages = 0;  // half the budget, as the model runner
  s.recall_ks = {};
  if (allocator != "uniform") {
    worker::AllocatorChoice c{.kind = allocator, .path = path,
                              .total_pages = budget * h.n_layers, .min_pages = kMinLayerPages};
    ASSIGN_OR_RETURN(s.layer_budget_pages, worker::AllocateLayerBudgets(
                                               c, h.n_layers, h.n_kv_heads, context, o.page_size));
  }
  const absl::Time t0 = absl::Now();
  absl::StatusOr<TraceReader> reader = TraceReader::Open(o.trace_path);
  if (!reader.ok()) return reader.status();
  worker::SimReport rep;
  ASSIGN_OR_RETURN(rep, worker::RunSimulation(*worker::FileTraceSource(std::move(*reader)), s));
  const double steps = std::max<uint32_t>(rep.steps, 1);
  const double secs = absl::ToDoubleSeconds(absl::Now() - t0);
  Progress(absl::StrFormat("simulate %s 1/%u %s: rel err %.4f (%.1f s)", policy, fraction,
                           allocator, rep.mean_rel_error, secs));
  return absl::StrFormat(
      "\n    {\"policy\": \"%s\", \"budget_fraction\": %u, \"budget_pages\": %u, "
      "\"allocator\": \"%s\", \"mean_rel_error\": %.6f, \"max_rel_error\": %.6f, "
      "\"pages_attended_per_step\": %.2f, \"pages_recalled_per_step\": %.2f, "
      "\"bytes_recalled_per_step\": %.0f, \"pages_backed_up\": %llu, "
      "\"prefill_pages_recalled\": %llu, \"seconds\": %.2f}",
      policy, fraction, budget, allocator, rep.mean_rel_error, rep.max_rel_error,
      rep.stats.pages_attended / steps, rep.stats.pages_recalled / steps,
      rep.stats.bytes_recalled / steps,
      static_cast<unsigned long long>(rep.counters.pages_backed_up),
      static_cast<unsigned long long>(rep.prefill_stats.pages_recalled), secs);
}

absl::StatusOr<std::string> SimulateAll(const TraceReader& r, const FidelityOptions& o) {
  std::map<std::string, std::string> profiles;
  ASSIGN_OR_RETURN(profiles, BuildAllocatorProfiles(r, o.allocators, o.work_dir + "/kvtier-eval"));
  std::string json = "[";
  for (const std::string& policy : o.policies) {
    for (uint32_t f : o.budget_fractions) {
      for (const std::string& a : o.allocators) {
        const bool listed = std::find(o.allocator_policies.begin(), o.allocator_policies.end(),
                                      policy) != o.allocator_policies.end();
        if (a != "uniform" && (!listed || model::PolicyKeepsEveryPage(policy))) continue;
        absl::StatusOr<std::string> row = SimulateOne(r, o, policy, f, a, profiles[a]);
        if (!row.ok()) {
          // One configuration the policy refuses does not end the sweep.
          Progress(absl::StrFormat("simulate %s 1/%u %s: %s", policy, f, a,
                                   row.status().ToString()));
          row = absl::StrFormat(
              "\n    {\"policy\": \"%s\", \"budget_fraction\": %u, \"allocator\": \"%s\", "
              "\"error\": %s}",
              policy, f, a, JsonQuoted(row.status().ToString()));
        }
        absl::StrAppend(&json, json.size() > 1 ? "," : "", *row);
      }
      if (policy == "full") break;  // one budget: the context
    }
  }
  return json + "\n  ]";
}

struct E2eTotals {
  double agree = 0, kl = 0, steps = 0, correct = 0, cases = 0;
  double pages_recalled = 0, bytes_recalled = 0, decode_seconds = 0;
};

// One policy at one budget on one case, added to `t`; `ref` is the full
// cache's run on the same case.
absl::Status RunE2eCase(const model::LoadedModel& m, const PasskeyPrompt& p, const ForcedRun& ref,
                        const std::string& policy, int budget_tokens, const std::string& device,
                        E2eTotals& t) {
  PolicyRun run;
  ASSIGN_OR_RETURN(run, RunPolicy(m, p.tokens, p.answer, ref,
                                  {.policy = policy, .tokens = budget_tokens, .device = device}));
  t.agree += run.agree();
  t.kl += run.kl();
  t.steps += run.steps();
  t.correct += run.correct ? 1 : 0;
  t.cases += 1;
  t.pages_recalled += run.pages_recalled;
  t.bytes_recalled += run.bytes_recalled;
  t.decode_seconds += run.decode_seconds;
  return absl::OkStatus();
}

std::string E2eRow(const std::string& policy, uint32_t fraction, int budget_tokens,
                   const E2eTotals& t) {
  const double steps = std::max(t.steps, 1.0);
  // Decode steps per case: the answer tokens after the first (prefill) one.
  const double decode_steps = std::max(t.steps - t.cases, 1.0);
  return absl::StrFormat(
      "\n    {\"policy\": \"%s\", \"budget_fraction\": %u, \"budget_tokens\": %d, "
      "\"greedy_agreement\": %.4f, \"mean_kl\": %.6f, \"passkey_accuracy\": %.4f, "
      "\"cases\": %.0f, \"pages_recalled_per_step\": %.2f, "
      "\"bytes_recalled_per_step\": %.0f}",
      policy, fraction, budget_tokens, t.agree / steps, t.kl / steps,
      t.correct / std::max(t.cases, 1.0), t.cases, t.pages_recalled / decode_steps,
      t.bytes_recalled / decode_steps);
}

absl::StatusOr<std::string> RunEndToEnd(const model::LoadedModel& m, const FidelityOptions& o) {
  std::vector<PasskeyPrompt> prompts;
  std::vector<ForcedRun> refs;
  std::string cases = "[";
  std::unique_ptr<model::DenseAttentionBackend> dense;
  ASSIGN_OR_RETURN(dense, model::DenseAttentionBackend::Create(m.weights.config.attention_shape()));
  for (const PasskeyCase& c : PasskeyCases(0, o.e2e_cases, o.seed + 1)) {
    PasskeyPrompt p;
    ASSIGN_OR_RETURN(p, FitPasskeyPrompt(m, c, o.e2e_context - 16));
    ForcedRun ref;
    ASSIGN_OR_RETURN(ref, RunForced(m, *dense, p.tokens, p.answer, 0, nullptr));
    absl::StrAppendFormat(&cases, "%s\n    {\"depth\": %.3f, \"passkey\": %u, "
                          "\"prompt_tokens\": %zu, \"answer_tokens\": %zu}",
                          cases.size() > 1 ? "," : "", p.c.depth, p.c.passkey, p.tokens.size(),
                          p.answer.size());
    prompts.push_back(std::move(p));
    refs.push_back(std::move(ref));
  }
  std::string rows = "[";
  const absl::Time t0 = absl::Now();
  for (const std::string& policy : o.policies) {
    for (uint32_t f : o.budget_fractions) {
      const int budget = policy == "full" ? 0 : static_cast<int>(o.e2e_context / f);
      E2eTotals t;
      absl::Status status;
      for (size_t i = 0; i < prompts.size() && status.ok(); ++i) {
        status = RunE2eCase(m, prompts[i], refs[i], policy, budget, o.device, t);
      }
      if (!status.ok()) {
        // A budget the policy refuses does not end the sweep.
        Progress(absl::StrFormat("e2e %s 1/%u: %s", policy, f, status.ToString()));
        absl::StrAppendFormat(&rows,
                              "%s\n    {\"policy\": \"%s\", \"budget_fraction\": %u, "
                              "\"budget_tokens\": %d, \"error\": %s}",
                              rows.size() > 1 ? "," : "", policy, f, budget,
                              JsonQuoted(status.ToString()));
        continue;
      }
      Progress(absl::StrFormat("e2e %s 1/%u: agreement %.3f, KL %.4f, passkey %.0f/%.0f "
                               "(%.0f s)", policy, f, t.agree / std::max(t.steps, 1.0),
                               t.kl / std::max(t.steps, 1.0), t.correct, t.cases,
                               absl::ToDoubleSeconds(absl::Now() - t0)));
      absl::StrAppend(&rows, rows.size() > 1 ? "," : "", E2eRow(policy, f, budget, t));
      if (policy == "full") break;
    }
  }
  return absl::StrFormat("{\"context\": %u, \"cases\": %s\n  ], \"results\": %s\n  ]}",
                         o.e2e_context, cases, rows);
}

}  // namespace

absl::StatusOr<std::string> RunFidelity(const model::LoadedModel& m, const FidelityOptions& o) {
  const uint32_t prompt_target = o.context - o.trace_steps;
  const PasskeyCase c = PasskeyCases(0, 1, o.seed)[0];
  PasskeyPrompt p;
  ASSIGN_OR_RETURN(p, FitPasskeyPrompt(m, {.depth = 0.5, .passkey = c.passkey}, prompt_target));
  if (!(o.reuse_trace && std::filesystem::exists(o.trace_path))) {
    Progress(absl::StrFormat("recording a %zu-token passkey prompt + %u steps to %s",
                             p.tokens.size(), o.trace_steps, o.trace_path));
    RETURN_IF_ERROR(RecordGreedyTrace(m, p.tokens, o.trace_path, kPromptQueries, o.trace_steps));
  }
  absl::StatusOr<TraceReader> r = TraceReader::Open(o.trace_path);
  if (!r.ok()) return r.status();
  const TraceHeader& h = r->header();
  std::string estimators, policies, e2e = "null";
  ASSIGN_OR_RETURN(estimators, EvaluateEstimators(*r, o));
  ASSIGN_OR_RETURN(policies, SimulateAll(*r, o));
  if (o.e2e_context > 0 && o.e2e_cases > 0) {
    ASSIGN_OR_RETURN(e2e, RunEndToEnd(m, o));
  }
  return absl::StrFormat(
      "{\n  \"trace\": {\"path\": \"%s\", \"prompt_tokens\": %u, \"decode_steps\": %u, "
      "\"layers\": %u, \"q_heads\": %u, \"kv_heads\": %u, \"head_dim\": %u, "
      "\"page_size\": %u, \"context\": %u, \"task\": \"passkey depth 50%%\"},\n"
      "  \"estimators\": %s,\n  \"policies\": %s,\n  \"end_to_end\": %s\n}\n",
      o.trace_path, h.prompt_len, h.decode_steps, h.n_layers, h.n_q_heads, h.n_kv_heads,
      h.head_dim, o.page_size, o.context, estimators, policies, e2e);
}

}  // namespace kvtier::eval
