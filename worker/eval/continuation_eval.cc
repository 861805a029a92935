#include "worker/eval/continuation_eval.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "worker/eval/model_session.h"
#include "worker/model/dense_attention_backend.h"

namespace kvtier::eval {
namespace {

struct Reference {
  NeedlePrompt p;
  std::vector<int> tokens;  // the dense reference's greedy continuation
  ForcedRun run;            // its logits, row i predicting tokens[i]
  double repetition = 0;
};

uint32_t SharedPrefix(const std::vector<int>& a, const std::vector<int>& b) {
  uint32_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

std::string Doubles(const std::vector<double>& v, int digits) {
  std::vector<std::string> parts;
  for (double x : v) parts.push_back(absl::StrFormat("%.*f", digits, x));
  return absl::StrCat("[", absl::StrJoin(parts, ", "), "]");
}

absl::Status Validate(const ContinuationOptions& o, const model::LoadedModel& m) {
  if (o.lengths.empty() || o.prompts == 0 || o.policies.empty() ||
      o.budget_fractions.empty()) {
    return absl::InvalidArgumentError(
        "continuation: lengths, prompts, policies and budgets are needed");
  }
  const uint32_t longest = *std::max_element(o.lengths.begin(), o.lengths.end());
  if (*std::min_element(o.lengths.begin(), o.lengths.end()) == 0 ||
      o.context > static_cast<uint32_t>(m.weights.config.max_positions) ||
      o.context < longest + 64) {
    return absl::InvalidArgumentError(absl::StrCat(
        "continuation: context ", o.context, " must hold the longest continuation (", longest,
        ") and 64 prompt tokens, and fit the model's ", m.weights.config.max_positions));
  }
  return CheckSweep("continuation", o.policies, o.budget_fractions, o.page_size);
}

}  // namespace

double RepeatedFourGrams(const std::vector<int>& tokens) {
  if (tokens.size() < 5) return 0;
  std::set<std::array<int, 4>> seen;
  uint32_t repeated = 0, total = 0;
  for (size_t i = 0; i + 4 <= tokens.size(); ++i) {
    const std::array<int, 4> g = {tokens[i], tokens[i + 1], tokens[i + 2], tokens[i + 3]};
    repeated += seen.insert(g).second ? 0 : 1;
    ++total;
  }
  return static_cast<double>(repeated) / total;
}

absl::StatusOr<std::string> RunContinuationEval(const model::LoadedModel& m,
                                                const ContinuationOptions& o) {
  RETURN_IF_ERROR(Validate(o, m));
  const uint32_t longest = *std::max_element(o.lengths.begin(), o.lengths.end());
  std::vector<NeedleCase> cases;
  ASSIGN_OR_RETURN(cases, NeedleCases(o.tasks, o.fillers, {KeyFormat::kDigits, KeyFormat::kWords},
                                      {0.1, 0.5, 0.9}, o.prompts, o.seed));
  std::unique_ptr<model::DenseAttentionBackend> dense;
  ASSIGN_OR_RETURN(dense, model::DenseAttentionBackend::Create(m.weights.config.attention_shape()));
  const absl::Time t0 = absl::Now();
  std::vector<Reference> refs;
  std::string prompt_json = "[";
  for (const NeedleCase& c : cases) {
    Reference r;
    ASSIGN_OR_RETURN(r.p, FitNeedlePrompt(m, c, o.context - longest));
    ASSIGN_OR_RETURN(r.run, RunForced(m, *dense, r.p.tokens, {}, static_cast<int>(longest),
                                      &r.tokens));
    r.repetition = RepeatedFourGrams(r.tokens);
    absl::StrAppendFormat(&prompt_json,
                          "%s\n    {\"task\": \"%s\", \"filler\": \"%s\", \"prompt_tokens\": %zu, "
                          "\"repetition\": %.4f, \"text\": %s}",
                          prompt_json.size() > 1 ? "," : "", NeedleTaskName(c.task),
                          NeedleFillerName(c.filler), r.p.tokens.size(), r.repetition,
                          JsonQuoted(DecodeText(m, r.p.tokens.back(), r.tokens)));
    refs.push_back(std::move(r));
    Progress(absl::StrFormat("continuation: reference %zu/%zu (%.0f s)", refs.size(),
                             cases.size(), absl::ToDoubleSeconds(absl::Now() - t0)));
  }
  double full_repetition = 0;
  for (const Reference& r : refs) full_repetition += r.repetition / refs.size();
  std::string rows = "[";
  for (const std::string& policy : o.policies) {
    for (uint32_t fraction : o.budget_fractions) {
      const int budget = policy == "full" ? 0 : static_cast<int>(o.context / fraction);
      const RunBudget run_budget = {.policy = policy, .tokens = budget, .unit = o.budget_unit,
                                    .page_size = o.page_size, .context = o.context,
                                    .device = o.device};
      std::vector<double> agree(o.lengths.size(), 0), kl(o.lengths.size(), 0);
      double repetition = 0, shared = 0;
      absl::Status status;
      for (const Reference& r : refs) {
        absl::StatusOr<PolicyRun> forced =
            RunPolicy(m, r.p.tokens, r.tokens, r.run, run_budget);
        if (!forced.ok()) {
          status = forced.status();
          break;
        }
        for (size_t j = 0; j < o.lengths.size(); ++j) {
          const uint32_t n = o.lengths[j];
          const double weight = 1.0 / (static_cast<double>(n) * refs.size());
          for (uint32_t i = 0; i < n; ++i) {
            agree[j] += forced->step_agree[i] * weight;
            kl[j] += forced->step_kl[i] * weight;
          }
        }
        std::vector<int> own;
        absl::StatusOr<std::unique_ptr<model::WorkerAttentionBackend>> b =
            MakeWorker(m, run_budget);
        absl::StatusOr<ForcedRun> free =
            b.ok() ? RunForced(m, **b, r.p.tokens, {}, static_cast<int>(longest), &own, nullptr,
                               o.device)
                   : absl::StatusOr<ForcedRun>(b.status());
        if (!free.ok()) {
          status = free.status();
          break;
        }
        repetition += RepeatedFourGrams(own) / refs.size();
        shared += static_cast<double>(SharedPrefix(own, r.tokens)) / refs.size();
      }
      if (!status.ok()) {
        Progress(absl::StrFormat("continuation %s 1/%u %s: %s", policy, fraction,
                                 model::BudgetUnitName(o.budget_unit),
                                 status.ToString()));
        absl::StrAppendFormat(&rows,
                              "%s\n    {\"policy\": \"%s\", \"budget_fraction\": %u, "
                              "\"budget_tokens\": %d, \"error\": %s}",
                              rows.size() > 1 ? "," : "", policy, fraction, budget,
                              JsonQuoted(status.ToString()));
        continue;
      }
      Progress(absl::StrFormat(
          "continuation %s 1/%u %s: agreement %s, KL %s, repetition %.3f (reference %.3f), "
          "identical for %.1f tokens (%.0f s)",
          policy, fraction, model::BudgetUnitName(o.budget_unit), Doubles(agree, 3),
          Doubles(kl, 4), repetition, full_repetition, shared,
          absl::ToDoubleSeconds(absl::Now() - t0)));
      absl::StrAppendFormat(
          &rows,
          "%s\n    {\"policy\": \"%s\", \"budget_fraction\": %u, \"budget_tokens\": %d, "
          "\"agreement\": %s, \"mean_kl\": %s, \"repetition\": %.4f, "
          "\"reference_repetition\": %.4f, \"identical_prefix\": %.2f}",
          rows.size() > 1 ? "," : "", policy, fraction, budget, Doubles(agree, 4),
          Doubles(kl, 6), repetition, full_repetition, shared);
      if (policy == "full") break;
    }
  }
  std::vector<std::string> lengths;
  for (uint32_t n : o.lengths) lengths.push_back(absl::StrCat(n));
  return absl::StrFormat(
      "{\n  \"context\": %u,\n  \"budget_unit\": \"%s\",\n  \"lengths\": [%s],\n"
      "  \"prompts\": %s\n  ],\n  \"results\": %s\n  ]\n}\n",
      o.context, model::BudgetUnitName(o.budget_unit), absl::StrJoin(lengths, ", "),
      prompt_json, rows);
}

}  // namespace kvtier::eval
