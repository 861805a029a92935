#include "worker/eval/long_run.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "client/store_client.h"
#include "common/status_macros.h"
#include "worker/client_page_store.h"
#include "worker/eval/model_session.h"
#include "worker/eval/passkey.h"
#include "worker/model/dense_attention_backend.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::eval {
namespace {

void Say(const std::string& line) {
  std::fprintf(stderr, "[kvtier-eval] %s\n", line.c_str());
  std::fflush(stderr);
}

std::string Text(const model::LoadedModel& m, int prev, const std::vector<int>& tokens) {
  std::string out;
  for (int t : tokens) {
    out += m.tokenizer->Decode(prev, t);
    prev = t;
  }
  return out;
}

std::string Mib(double bytes) { return absl::StrFormat("%.1f MiB", bytes / (1 << 20)); }

}  // namespace

absl::Status LongRunOptions::Validate() const {
  if (prompt_tokens < 64 || steps < 1 || budget_fraction < 1 || page_size < 1 ||
      progress_every < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "long run: prompt_tokens=", prompt_tokens, " (>= 64), steps=", steps,
        " (>= 1), budget_fraction=", budget_fraction, " (>= 1), page_size=", page_size,
        " (>= 1), progress_every=", progress_every, " (>= 1)"));
  }
  return absl::OkStatus();
}

absl::Status RunLong(const model::LoadedModel& m, const LongRunOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  const model::AttentionShape shape = m.weights.config.attention_shape();
  PasskeyPrompt p;
  ASSIGN_OR_RETURN(p, FitPasskeyPrompt(m, {.depth = 0.5, .passkey = 31415}, o.prompt_tokens));
  const int context = static_cast<int>(p.tokens.size()) + o.steps;
  // The full policy keeps the model's whole context (budget 0).
  const int budget =
      o.policy == "full" ? 0 : std::max(2 * o.page_size, context / o.budget_fraction);
  Say(absl::StrFormat("prompt: %zu tokens (passkey 31415 at 50%% depth), %d greedy steps, "
                      "policy %s, budget %d tokens per layer (1/%d of %d), pages of %d tokens",
                      p.tokens.size(), o.steps, o.policy, budget, o.budget_fraction, context,
                      o.page_size));

  std::unique_ptr<client::StoreClient> client;
  std::unique_ptr<worker::ClientPageStore> store;
  if (!o.target.empty()) {
    ASSIGN_OR_RETURN(client, client::StoreClient::Connect(o.target, client::ClientOptions()));
    store = std::make_unique<worker::ClientPageStore>(client.get());
    Say("pages are backed up to and recalled from kvtier-server at " + o.target);
  }
  std::unique_ptr<model::WorkerAttentionBackend> b;
  ASSIGN_OR_RETURN(b, model::WorkerAttentionBackend::Create(
                          shape, {.policy = o.policy, .budget_tokens = budget,
                                  .page_size = o.page_size, .max_sequences = 1,
                                  .store = store.get()}));
  const double page_bytes = 2.0 * o.page_size * shape.kv_dim() * sizeof(float);
  const int n0 = static_cast<int>(p.tokens.size());
  absl::Time t0;
  auto on_step = [&](int done) {
    if (done % o.progress_every != 0 && done + 1 != o.steps) return;
    const int len = n0 + done;
    const double pages = (len + o.page_size - 1) / o.page_size;
    double resident = 0;
    for (uint32_t lb : b->layer_budgets()) resident += std::min<double>(lb, pages);
    const worker::CacheCounters& c = b->counters();
    Say(absl::StrFormat(
        "step %3d/%d  %5.1f tok/s  KV resident %s of %s  backed up %llu pages, recalled %llu",
        done, o.steps, done / std::max(absl::ToDoubleSeconds(absl::Now() - t0), 1e-9),
        Mib(resident * page_bytes), Mib(pages * shape.n_layers * page_bytes),
        static_cast<unsigned long long>(c.pages_backed_up),
        static_cast<unsigned long long>(c.pages_recalled)));
  };
  // RunForced starts the decode clock after the prefill; mirror it here.
  Say("prefill (budgeted run)...");
  std::vector<int> got, want;
  t0 = absl::Now();
  ForcedRun run;
  ASSIGN_OR_RETURN(run, RunForced(m, *b, p.tokens, {}, o.steps, &got, [&](int done) {
    if (done == 1) t0 = absl::Now();
    on_step(done);
  }));
  Say(absl::StrFormat("budgeted: prefill %.1f s (%.0f tok/s), decode %.1f tok/s",
                      run.prefill_seconds, n0 / std::max(run.prefill_seconds, 1e-9),
                      (o.steps - 1) / std::max(run.decode_seconds, 1e-9)));
  Say("full-cache reference run...");
  std::unique_ptr<model::DenseAttentionBackend> dense;
  ASSIGN_OR_RETURN(dense, model::DenseAttentionBackend::Create(shape));
  ForcedRun ref;
  ASSIGN_OR_RETURN(ref, RunForced(m, *dense, p.tokens, {}, o.steps, &want));
  int same = 0, prefix = 0;
  for (int i = 0; i < o.steps; ++i) same += got[i] == want[i] ? 1 : 0;
  while (prefix < o.steps && got[prefix] == want[prefix]) ++prefix;
  auto answered = [&](const std::vector<int>& out) {
    return out.size() >= p.answer.size() && std::equal(p.answer.begin(), p.answer.end(), out.begin());
  };
  Say(absl::StrFormat("passkey 31415: budgeted run %s, full cache %s",
                      answered(got) ? "correct" : "wrong", answered(want) ? "correct" : "wrong"));
  const worker::CacheCounters& c = b->counters();
  std::printf("budgeted (%s): %s\nfull cache:      %s\n", o.policy.c_str(),
              Text(m, p.tokens.back(), got).c_str(), Text(m, p.tokens.back(), want).c_str());
  Say(absl::StrFormat(
      "summary: greedy agreement with the full cache %d/%d (%.1f%%), identical prefix %d "
      "tokens; decode %.1f tok/s budgeted vs %.1f tok/s full; KV resident %s of %s; "
      "pages backed up %llu (%s), recalled %llu (%s)",
      same, o.steps, 100.0 * same / o.steps, prefix,
      (o.steps - 1) / std::max(run.decode_seconds, 1e-9),
      (o.steps - 1) / std::max(ref.decode_seconds, 1e-9),
      Mib([&] {
        double r = 0;
        const double pages = (context + o.page_size - 1) / o.page_size;
        for (uint32_t lb : b->layer_budgets()) r += std::min<double>(lb, pages);
        return r * page_bytes;
      }()),
      Mib(((context + o.page_size - 1) / o.page_size) * shape.n_layers * page_bytes),
      static_cast<unsigned long long>(c.pages_backed_up), Mib(c.bytes_backed_up),
      static_cast<unsigned long long>(c.pages_recalled), Mib(c.bytes_recalled)));
  return absl::OkStatus();
}

}  // namespace kvtier::eval
