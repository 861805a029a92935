#include "worker/eval/needle_eval.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/json_text.h"
#include "common/status_macros.h"
#include "worker/eval/allocator_profiles.h"
#include "worker/eval/model_session.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/worker_attention_backend.h"
#include "worker/policy/arkv_policy.h"

namespace kvtier::eval {
namespace {

struct FittedCase {
  NeedlePrompt p;
  ForcedRun ref;
  uint64_t full_bytes = 0;  // KV bytes of the whole prompt + answer, all layers
};

// Correct cases and cases of one slice (a task, filler, format or depth).
using Tally = std::map<std::string, std::pair<uint32_t, uint32_t>>;

std::string TallyJson(const Tally& t) {
  std::string out = "{";
  for (const auto& [name, cn] : t) {
    absl::StrAppendFormat(&out, "%s\"%s\": [%u, %u]", out.size() > 1 ? ", " : "", name, cn.first,
                          cn.second);
  }
  return out + "}";
}

struct Row {
  uint32_t correct = 0, cases = 0, agree = 0, steps = 0;
  double kl = 0, resident_fraction = 0, digest_fraction = 0, decode_seconds = 0;
  Tally by_task, by_filler, by_format, by_depth;
  std::string outcomes;  // one '0' or '1' per case, in case order
  std::vector<int> layer_tokens;  // an allocator's per-layer budgets (empty: uniform)
  // Per layer, summed over cases: its peak resident bytes over the full
  // cache's bytes of one layer.
  std::vector<double> layer_fraction;
};

void Add(Row& row, const FittedCase& f, const PolicyRun& run) {
  const uint32_t ok = run.correct ? 1 : 0;
  row.correct += ok;
  row.cases += 1;
  row.agree += run.agree();
  row.steps += run.steps();
  row.kl += run.kl();
  row.decode_seconds += run.decode_seconds;
  row.resident_fraction += static_cast<double>(run.peak_resident_bytes) / f.full_bytes;
  row.digest_fraction += static_cast<double>(run.peak_digest_bytes) / f.full_bytes;
  const size_t layers = run.peak_resident_layer_bytes.size();
  row.layer_fraction.resize(layers, 0.0);
  for (size_t l = 0; l < layers; ++l) {
    row.layer_fraction[l] +=
        static_cast<double>(run.peak_resident_layer_bytes[l]) * layers / f.full_bytes;
  }
  const NeedleCase& c = f.p.c;
  for (auto [tally, key] : {std::pair{&row.by_task, NeedleTaskName(c.task)},
                            std::pair{&row.by_filler, NeedleFillerName(c.filler)},
                            std::pair{&row.by_format, KeyFormatName(c.format)},
                            std::pair{&row.by_depth, absl::StrFormat("%.2f", c.depth)}}) {
    (*tally)[key].first += ok;
    (*tally)[key].second += 1;
  }
  row.outcomes += run.correct ? '1' : '0';
}

std::string RowJson(const std::string& policy, const std::string& allocator, uint32_t context,
                    uint32_t fraction, int budget_tokens, const Row& r) {
  const auto [lo, hi] = WilsonInterval(r.correct, r.cases);
  const double cases = std::max<double>(r.cases, 1);
  return absl::StrFormat(
      "\n    {\"policy\": \"%s\", \"allocator\": \"%s\", \"context\": %u, "
      "\"budget_fraction\": %u, \"budget_tokens\": %d, \"cases\": %u, \"correct\": %u, "
      "\"accuracy\": %.4f, "
      "\"ci95\": [%.4f, %.4f], \"greedy_agreement\": %.4f, \"mean_kl\": %.6f, "
      "\"resident_fraction\": %.4f, \"digest_fraction\": %.4f, \"decode_seconds\": %.2f, "
      "\"by_task\": %s, "
      "\"by_filler\": %s, \"by_format\": %s, \"by_depth\": %s, \"outcomes\": \"%s\", "
      "\"layer_budget_tokens\": [%s], \"resident_fraction_by_layer\": [%s]}",
      policy, allocator, context, fraction, budget_tokens, r.cases, r.correct, r.correct / cases,
      lo, hi,
      static_cast<double>(r.agree) / std::max<uint32_t>(r.steps, 1),
      r.kl / std::max<uint32_t>(r.steps, 1), r.resident_fraction / cases,
      r.digest_fraction / cases, r.decode_seconds,
      TallyJson(r.by_task), TallyJson(r.by_filler), TallyJson(r.by_format),
      TallyJson(r.by_depth), r.outcomes, absl::StrJoin(r.layer_tokens, ", "),
      absl::StrJoin(r.layer_fraction, ", ", [cases](std::string* out, double sum) {
        absl::StrAppendFormat(out, "%.4f", sum / cases);
      }));
}

absl::Status Validate(const NeedleEvalOptions& o, const model::LoadedModel& m) {
  RETURN_IF_ERROR(
      o.suite.Validate("needles", static_cast<uint32_t>(m.weights.config.max_positions)));
  if (o.policies.empty() || o.budget_fractions.empty()) {
    return absl::InvalidArgumentError("needles: policies and budgets are needed");
  }
  if (o.allocators.empty()) return absl::InvalidArgumentError("needles: no allocator");
  if (absl::Status s = CheckAllocatorNames(o.allocators); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("needles: ", s.message()));
  }
  return CheckSweep("needles", o.policies, o.budget_fractions, o.page_size);
}

// The allocators' profiles for one context, from a calibration case drawn
// with another seed than the test cases ("" for uniform).
absl::StatusOr<std::map<std::string, std::string>> CalibrateAllocators(
    const model::LoadedModel& m, const NeedleEvalOptions& o, uint32_t context,
    const std::string& stem) {
  if (std::all_of(o.allocators.begin(), o.allocators.end(),
                  [](const std::string& a) { return a == "uniform"; })) {
    return std::map<std::string, std::string>{{"uniform", ""}};
  }
  constexpr uint32_t kSteps = 16;  // LU-KV's oracle reads decode steps
  std::vector<NeedleCase> calibration;
  NeedleSuiteOptions apart = o.suite;
  apart.cases = 1;
  apart.seed += 0x9e3779b97f4a7c15ULL;
  ASSIGN_OR_RETURN(calibration, apart.Cases());
  ASSIGN_OR_RETURN(NeedlePrompt p, FitNeedlePrompt(m, calibration[0], context - kSteps));
  const std::string trace = stem + ".kvtrace";
  RETURN_IF_ERROR(RecordGreedyTrace(m, p.tokens, trace, 32, kSteps));
  ASSIGN_OR_RETURN(TraceReader r, TraceReader::Open(trace));
  return BuildAllocatorProfiles(r, o.allocators, stem);
}

// The fewest pages an allocator may leave `policy` in a layer: ArkVale's
// top-k (half the budget) must exceed its sink and window pages, ARKV's
// cache must hold more than its window (under a memory budget one page
// more, for both tiers' page rounding: ArkvPolicy::CacheSize), the rest
// need a page beside the one being written.
uint32_t MinLayerPages(const std::string& policy, int page_size, model::BudgetUnit unit) {
  if (policy == "arkvale") return 8;
  if (policy == "arkv" || policy == "arkv_last_query" || policy == "arkv_per_head") {
    const uint32_t spare = unit == model::BudgetUnit::kResidentMemory ? 1 : 0;
    return (worker::ArkvOptions().window + 1) / page_size + 1 + spare;
  }
  return 2;
}

// Every fitted case of `context` under `policy` at `budget` tokens per
// layer, or at the per-layer budgets `allocator` gives for budget x layers
// from `profile`.
absl::StatusOr<Row> RunRow(const model::LoadedModel& m, const NeedleEvalOptions& o,
                           const std::vector<FittedCase>& fitted, uint32_t context,
                           const std::string& policy, int budget, const std::string& allocator,
                           const std::string& profile) {
  std::vector<int> layer_tokens;
  if (allocator != "uniform") {
    const model::AttentionShape shape = m.weights.config.attention_shape();
    const uint32_t budget_pages = (budget + o.page_size - 1) / o.page_size;
    ASSIGN_OR_RETURN(layer_tokens,
                     AllocatedLayerTokens(allocator, profile, budget_pages,
                                          MinLayerPages(policy, o.page_size, o.budget_unit),
                                          static_cast<uint32_t>(shape.n_layers),
                                          static_cast<uint32_t>(shape.n_kv_heads), context,
                                          static_cast<uint32_t>(o.page_size)));
  }
  Row row;
  for (const FittedCase& f : fitted) {
    ASSIGN_OR_RETURN(PolicyRun run,
                     RunPolicy(m, f.p.tokens, f.p.answer, f.ref,
                               {.policy = policy, .tokens = budget, .unit = o.budget_unit,
                                .layer_tokens = layer_tokens, .page_size = o.page_size,
                                .digest_dtype = o.digest_dtype, .context = context,
                                .device = o.device}));
    if (!layer_tokens.empty()) {
      // The budgets the worker applied (under a memory budget the largest
      // may have given pages back to fit it).
      row.layer_tokens.clear();
      for (uint32_t pages : run.layer_budget_pages) {
        row.layer_tokens.push_back(static_cast<int>(pages) * o.page_size);
      }
    }
    Add(row, f, run);
  }
  return row;
}

}  // namespace

absl::StatusOr<std::string> RunNeedleEval(const model::LoadedModel& m,
                                          const NeedleEvalOptions& o) {
  RETURN_IF_ERROR(Validate(o, m));
  std::vector<NeedleCase> cases;
  ASSIGN_OR_RETURN(cases, o.suite.Cases());
  const model::AttentionShape shape = m.weights.config.attention_shape();
  // fp32 K and V of one token, all layers (the worker backend's pages).
  const uint64_t token_bytes =
      uint64_t{2} * shape.n_kv_heads * shape.head_dim * sizeof(float) * shape.n_layers;
  std::unique_ptr<model::DenseAttentionBackend> dense;
  ASSIGN_OR_RETURN(dense, model::DenseAttentionBackend::Create(shape));
  std::string case_json = "[", rows = "[";
  const absl::Time t0 = absl::Now();
  const std::string stem =
      (std::filesystem::path(o.work_dir) / absl::StrCat("kvtier-needles.", getpid())).string();
  absl::Cleanup remove_files = [&stem] {
    std::error_code ignored;
    std::filesystem::remove(stem + ".kvtrace", ignored);
    RemoveAllocatorProfiles(stem);
  };
  for (uint32_t context : o.suite.contexts) {
    std::vector<FittedCase> fitted;
    for (const NeedleCase& c : cases) {
      FittedCase f;
      ASSIGN_OR_RETURN(f.p, FitNeedlePrompt(m, c, context));
      ASSIGN_OR_RETURN(f.ref, RunForced(m, *dense, f.p.tokens, f.p.answer, 0, nullptr));
      const uint64_t tokens = f.p.tokens.size() + f.p.answer.size() - 1;
      const uint64_t pages = (tokens + o.page_size - 1) / o.page_size;
      f.full_bytes = pages * o.page_size * token_bytes;
      absl::StrAppendFormat(
          &case_json,
          "%s\n    {\"context\": %u, \"task\": \"%s\", \"filler\": \"%s\", \"format\": \"%s\", "
          "\"depth\": %.3f, \"key\": %s, \"prompt_tokens\": %zu, \"answer_tokens\": %zu}",
          case_json.size() > 1 ? "," : "", context, NeedleTaskName(c.task),
          NeedleFillerName(c.filler), KeyFormatName(c.format), c.depth,
          JsonQuoted(f.p.text.key), f.p.tokens.size(), f.p.answer.size());
      fitted.push_back(std::move(f));
      Progress(absl::StrFormat("needles %u: reference %zu/%zu (%.0f s)", context, fitted.size(),
                               cases.size(), absl::ToDoubleSeconds(absl::Now() - t0)));
    }
    std::map<std::string, std::string> profiles;
    ASSIGN_OR_RETURN(profiles, CalibrateAllocators(m, o, context, stem));
    for (const std::string& policy : o.policies) {
      for (uint32_t fraction : o.budget_fractions) {
        for (const std::string& allocator : o.allocators) {
          if (allocator != "uniform" && model::PolicyKeepsEveryPage(policy, o.budget_unit)) continue;
          const int budget = policy == "full" ? 0 : static_cast<int>(context / fraction);
          absl::StatusOr<Row> row =
              RunRow(m, o, fitted, context, policy, budget, allocator, profiles[allocator]);
          if (!row.ok()) {
            Progress(absl::StrFormat("needles %u %s 1/%u %s %s: %s", context, policy, fraction,
                                     model::BudgetUnitName(o.budget_unit), allocator,
                                     row.status().ToString()));
            absl::StrAppendFormat(&rows,
                                  "%s\n    {\"policy\": \"%s\", \"allocator\": \"%s\", "
                                  "\"context\": %u, \"budget_fraction\": %u, "
                                  "\"budget_tokens\": %d, \"error\": %s}",
                                  rows.size() > 1 ? "," : "", policy, allocator, context,
                                  fraction, budget, JsonQuoted(row.status().ToString()));
            continue;
          }
          const auto [lo, hi] = WilsonInterval(row->correct, row->cases);
          Progress(absl::StrFormat(
              "needles %u %s 1/%u %s %s: %u/%u found (95%% CI %.2f-%.2f), agreement %.3f, "
              "resident %.3f of full, digests %.3f (%.0f s)",
              context, policy, fraction, model::BudgetUnitName(o.budget_unit), allocator,
              row->correct, row->cases, lo, hi,
              static_cast<double>(row->agree) / std::max<uint32_t>(row->steps, 1),
              row->resident_fraction / std::max<uint32_t>(row->cases, 1),
              row->digest_fraction / std::max<uint32_t>(row->cases, 1),
              absl::ToDoubleSeconds(absl::Now() - t0)));
          absl::StrAppend(&rows, rows.size() > 1 ? "," : "",
                          RowJson(policy, allocator, context, fraction, budget, *row));
        }
        if (policy == "full") break;  // one budget: the context
      }
    }
  }
  return absl::StrFormat(
      "{\n  \"page_size\": %d,\n  \"digest_type\": \"%s\",\n  \"budget_unit\": \"%s\",\n"
      "  \"cases\": %s\n  ],\n  \"results\": %s\n  ]\n}\n",
      o.page_size, DTypeName(o.digest_dtype),
      model::BudgetUnitName(o.budget_unit), case_json, rows);
}

}  // namespace kvtier::eval
