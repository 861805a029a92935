#include "worker/eval/long_run.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "worker/eval/model_session.h"
#include "worker/eval/needle_suite.h"
#include "worker/eval/passkey.h"
#include "worker/eval/prefix_eval.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/worker_attention_backend.h"
#include "worker/transfer/client_page_store.h"

namespace kvtier::eval {
namespace {

void Say(const std::string& line) {
  std::fprintf(stderr, "[kvtier-eval] %s\n", line.c_str());
  std::fflush(stderr);
}

std::string Mib(double bytes) { return absl::StrFormat("%.1f MiB", bytes / (1 << 20)); }

}  // namespace

absl::Status LongRunOptions::Validate() const {
  RETURN_IF_ERROR(ParseNeedleFiller(filler).status());
  if (prompt_tokens < 64 || steps < 1 || budget_fraction < 1 || page_size < 1 ||
      progress_every < 1 || answer_steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "long run: prompt_tokens=", prompt_tokens, " (>= 64), steps=", steps,
        " (>= 1), budget_fraction=", budget_fraction, " (>= 1), page_size=", page_size,
        " (>= 1), progress_every=", progress_every, " (>= 1), answer_steps=", answer_steps,
        " (>= 1)"));
  }
  return absl::OkStatus();
}

namespace {

// Resident and total KV bytes of a sequence of `tokens` tokens.
struct Footprint {
  double resident = 0, total = 0;
};
Footprint KvFootprint(const model::WorkerAttentionBackend& b, int tokens, int page_size) {
  const model::AttentionShape& shape = b.shape();
  const double page_bytes = 2.0 * page_size * shape.kv_dim() * sizeof(float);
  const double pages = (tokens + page_size - 1) / page_size;
  Footprint f;
  for (uint32_t budget : b.layer_budgets()) f.resident += std::min<double>(budget, pages);
  f.resident *= page_bytes;
  f.total = pages * shape.n_layers * page_bytes;
  return f;
}

struct Agreement {
  int same = 0, prefix = 0;
};
Agreement Compare(const std::vector<int>& got, const std::vector<int>& want) {
  Agreement a;
  const size_t n = std::min(got.size(), want.size());
  for (size_t i = 0; i < n; ++i) a.same += got[i] == want[i] ? 1 : 0;
  while (static_cast<size_t>(a.prefix) < n && got[a.prefix] == want[a.prefix]) ++a.prefix;
  return a;
}

// The long run's document: a secret in a filler, asked for at the end.
struct Document {
  std::vector<int> tokens;  // the prompt, BOS included
  std::vector<int> answer;  // " KEY"
  std::string key;
  std::string about;        // for the progress lines
  // The same document asking another question (the prefix reuse request),
  // and that question alone.
  std::string second_prompt;
  std::string second_question;
};

absl::StatusOr<Document> MakeDocument(const model::LoadedModel& m, const LongRunOptions& o) {
  Document d;
  ASSIGN_OR_RETURN(const NeedleFiller filler, ParseNeedleFiller(o.filler));
  if (filler == NeedleFiller::kLandmark) {
    PasskeyPrompt p;
    ASSIGN_OR_RETURN(p, FitPasskeyPrompt(m, {.depth = 0.5, .passkey = 31415}, o.prompt_tokens));
    std::string text;
    ASSIGN_OR_RETURN(text, BuildPasskeyPrompt(p.c));
    d.tokens = std::move(p.tokens);
    d.answer = std::move(p.answer);
    d.key = "31415";
    d.about = "landmark filler, passkey 31415 at 50% depth";
    d.second_prompt = text.substr(0, text.rfind(" What is the pass key?")) + kQuestion2;
    d.second_question = std::string(kQuestion2).substr(1);
    return d;
  }
  const NeedleCase c{.task = NeedleTask::kPasskey, .filler = filler,
                     .format = KeyFormat::kDigits, .depth = 0.5, .seed = 31415};
  NeedlePrompt p;
  // Room for the answer: the prompt itself may take prompt_tokens.
  ASSIGN_OR_RETURN(p, FitNeedlePrompt(m, c, static_cast<uint32_t>(o.prompt_tokens) + 8));
  d.tokens = std::move(p.tokens);
  d.answer = std::move(p.answer);
  d.key = p.text.key;
  d.about = absl::StrCat(o.filler, " notes, secret code ", d.key, " at 50% depth");
  d.second_question =
      "Question: Which code did the notes ask you to remember? Answer: The code is";
  d.second_prompt =
      p.text.prompt.substr(0, p.text.prompt.rfind("\n\nQuestion:")) + "\n\n" + d.second_question;
  return d;
}

bool Answered(const Document& d, const std::vector<int>& out) {
  return out.size() >= d.answer.size() &&
         std::equal(d.answer.begin(), d.answer.end(), out.begin());
}

// The budgeted run, with a progress line every `progress_every` steps.
absl::StatusOr<ForcedRun> RunBudgeted(const model::LoadedModel& m,
                                      model::WorkerAttentionBackend& b, const Document& p,
                                      const LongRunOptions& o, std::vector<int>* got) {
  const int n0 = static_cast<int>(p.tokens.size());
  absl::Time t0 = absl::Now();
  auto on_step = [&](int done) {
    // The clock starts after the first decode step (the prefill is apart).
    if (done == 1) t0 = absl::Now();
    if (done % o.progress_every != 0 && done + 1 != o.steps) return;
    const Footprint f = KvFootprint(b, n0 + done, o.page_size);
    const worker::CacheCounters& c = b.counters();
    Say(absl::StrFormat(
        "step %3d/%d  %5.1f tok/s  KV resident %s of %s  backed up %llu pages, recalled %llu",
        done, o.steps, (done - 1) / std::max(absl::ToDoubleSeconds(absl::Now() - t0), 1e-9),
        Mib(f.resident), Mib(f.total), static_cast<unsigned long long>(c.pages_backed_up),
        static_cast<unsigned long long>(c.pages_recalled)));
  };
  Say("prefill (budgeted run)...");
  ForcedRun run;
  ASSIGN_OR_RETURN(run, RunForced(m, b, p.tokens, {}, o.steps, got, on_step, o.device));
  Say(absl::StrFormat("budgeted: prefill %.1f s (%.0f tok/s), decode %.1f tok/s",
                      run.prefill_seconds, n0 / std::max(run.prefill_seconds, 1e-9),
                      (o.steps - 1) / std::max(run.decode_seconds, 1e-9)));
  return run;
}

// The same document, another question: once admitted with prefix reuse
// (the pages the budgeted run stored), once recomputed.
absl::Status AskAgain(const model::LoadedModel& m, model::WorkerAttentionBackend& b,
                      const Document& p, double first_prefill_s, const LongRunOptions& o) {
  std::vector<int> prompt;
  ASSIGN_OR_RETURN(prompt, Encode(m, p.second_prompt, true));
  ASSIGN_OR_RETURN(model::ReuseEstimator estimator,
                   model::ReuseEstimator::Create(m.weights.config));
  // The budgeted run measured the prefill speed.
  estimator.ObservePrefill(0, static_cast<uint32_t>(p.tokens.size()), first_prefill_s);
  Say(absl::StrFormat("second request: the same document, another question (%zu tokens): %s",
                      prompt.size(), p.second_question));
  Answer reused, computed;
  ASSIGN_OR_RETURN(reused, Ask(m, b, prompt, o.answer_steps, estimator, true, o.device));
  Say("  with prefix reuse: " + reused.report.DebugString());
  ASSIGN_OR_RETURN(computed, Ask(m, b, prompt, o.answer_steps, estimator, false, o.device));
  Say(absl::StrFormat("  recomputed: TTFT %.3f s", computed.report.ttft_s));
  const std::string answer = DecodeText(m, prompt.back(), reused.tokens);
  std::printf("second question, with reuse:%s\nsecond question, recomputed:%s\n", answer.c_str(),
              DecodeText(m, prompt.back(), computed.tokens).c_str());
  Say(absl::StrFormat(
      "second request: TTFT %.3f s with reuse vs %.3f s recomputing (%.1fx); %s, %u of %zu "
      "prompt tokens loaded (%llu pages, %s); answer%s (%s the recomputed one)",
      reused.report.ttft_s, computed.report.ttft_s,
      computed.report.ttft_s / std::max(reused.report.ttft_s, 1e-9),
      reused.report.decided ? reused.report.decision.DebugString() : "nothing stored",
      reused.report.reused_tokens, prompt.size(),
      static_cast<unsigned long long>(reused.report.fetch.pages_loaded),
      Mib(reused.report.fetch.bytes_loaded), answer,
      reused.tokens == computed.tokens ? "identical to" : "DIFFERS from"));
  return absl::OkStatus();
}

}  // namespace

absl::Status RunLong(const model::LoadedModel& m, const LongRunOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  const model::AttentionShape shape = m.weights.config.attention_shape();
  Document p;
  ASSIGN_OR_RETURN(p, MakeDocument(m, o));
  const int context = static_cast<int>(p.tokens.size()) + o.steps;
  // The full policy keeps the model's whole context (budget 0).
  const int budget =
      o.policy == "full" ? 0 : std::max(2 * o.page_size, context / o.budget_fraction);
  Say(absl::StrFormat("prompt: %zu tokens (%s), %d greedy steps, "
                      "policy %s, budget %d tokens per layer (1/%d of %d), pages of %d tokens",
                      p.tokens.size(), p.about, o.steps, o.policy, budget, o.budget_fraction,
                      context, o.page_size));
  std::unique_ptr<worker::ClientPageStore> store;
  if (!o.target.empty()) {
    ASSIGN_OR_RETURN(store, worker::ClientPageStore::Connect(o.target, o.client));
    Say("pages are backed up to and recalled from kvtier-server at " + o.target);
  }
  std::unique_ptr<model::WorkerAttentionBackend> b;
  ASSIGN_OR_RETURN(b, model::WorkerAttentionBackend::Create(
                          shape, {.policy = o.policy, .budget_tokens = budget,
                                  .page_size = o.page_size, .max_sequences = 1,
                                  .store = store.get(), .device = o.device}));
  std::vector<int> got, want;
  ForcedRun run, ref;
  ASSIGN_OR_RETURN(run, RunBudgeted(m, *b, p, o, &got));
  Say("full-cache reference run...");
  std::unique_ptr<model::DenseAttentionBackend> dense;
  ASSIGN_OR_RETURN(dense, model::DenseAttentionBackend::Create(shape));
  ASSIGN_OR_RETURN(ref, RunForced(m, *dense, p.tokens, {}, o.steps, &want));
  std::printf("budgeted (%s): %s\nfull cache:      %s\n", o.policy.c_str(),
              DecodeText(m, p.tokens.back(), got).c_str(),
              DecodeText(m, p.tokens.back(), want).c_str());
  Say(absl::StrFormat("secret %s: budgeted run %s, full cache %s", p.key,
                      Answered(p, got) ? "correct" : "wrong",
                      Answered(p, want) ? "correct" : "wrong"));
  const Agreement a = Compare(got, want);
  const Footprint f = KvFootprint(*b, context, o.page_size);
  const worker::CacheCounters& c = b->counters();
  Say(absl::StrFormat(
      "summary: greedy agreement with the full cache %d/%d (%.1f%%), identical prefix %d "
      "tokens; decode %.1f tok/s budgeted vs %.1f tok/s full (dense reference backend); "
      "KV resident %s of %s; pages backed up %llu (%s), recalled %llu (%s)",
      a.same, o.steps, 100.0 * a.same / o.steps, a.prefix,
      (o.steps - 1) / std::max(run.decode_seconds, 1e-9),
      (o.steps - 1) / std::max(ref.decode_seconds, 1e-9), Mib(f.resident), Mib(f.total),
      static_cast<unsigned long long>(c.pages_backed_up), Mib(c.bytes_backed_up),
      static_cast<unsigned long long>(c.pages_recalled), Mib(c.bytes_recalled)));
  if (!o.second_question) return absl::OkStatus();
  return AskAgain(m, *b, p, run.prefill_seconds, o);
}

}  // namespace kvtier::eval
