#include "worker/eval/prefix_eval.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/page_destination.h"
#include "common/status_macros.h"
#include "worker/eval/fidelity_metrics.h"
#include "worker/eval/model_session.h"
#include "worker/eval/passkey.h"
#include "worker/model/transformer.h"
#include "worker/transfer/client_page_store.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::eval {
namespace {

void Say(const std::string& line) {
  std::fprintf(stderr, "[kvtier-eval] %s\n", line.c_str());
  std::fflush(stderr);
}

constexpr char kQuestionStart[] = " What is the pass key?";

// The store's get bandwidth on `prompt`'s first `pages` pages of every
// layer: batched gets of 256 pages, one after another, timed, each page's
// K and V halves landing in rows allocated once, as a prefix load's do
// (PageStoreBackend::GetInto), but with the cores to themselves.
absl::StatusOr<double> MeasureGetBandwidth(worker::PageStoreBackend& store,
                                           const model::WorkerAttentionBackend& b,
                                           const std::vector<int>& prompt, uint32_t pages,
                                           uint64_t* bytes) {
  constexpr size_t kBatch = 256;
  ASSIGN_OR_RETURN(std::vector<Hash128> chain, b.PrefixChain(prompt));
  chain.resize(std::min<size_t>(chain.size(), pages));
  std::vector<PageKey> keys;
  for (uint32_t l = 0; l < static_cast<uint32_t>(b.shape().n_layers); ++l) {
    for (const Hash128& h : chain) keys.push_back(PageKey{.hash = h, .layer = l});
  }
  const size_t half = b.page_bytes() / 2;
  std::vector<uint8_t> k(kBatch * half), v(kBatch * half);
  std::vector<PageDestination> places(kBatch);
  for (size_t i = 0; i < kBatch; ++i) {
    places[i].pieces = {absl::MakeSpan(k.data() + i * half, half),
                        absl::MakeSpan(v.data() + i * half, half)};
  }
  *bytes = 0;
  const absl::Time t0 = absl::Now();
  for (size_t begin = 0; begin < keys.size(); begin += kBatch) {
    const size_t n = std::min<size_t>(kBatch, keys.size() - begin);
    ASSIGN_OR_RETURN(std::vector<worker::FetchedPage> got,
                     store.GetInto(absl::MakeConstSpan(keys.data() + begin, n),
                                   absl::MakeConstSpan(places.data(), n)));
    for (const worker::FetchedPage& p : got) {
      if (p.status == worker::FetchStatus::kOk) *bytes += p.layout.PageBytes();
    }
  }
  const double s = absl::ToDoubleSeconds(absl::Now() - t0);
  return s > 0 ? *bytes / s : 0.0;
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

}  // namespace

absl::Status PrefixEvalOptions::Validate() const {
  if (prefix_tokens.empty() || budget_fraction < 1 || page_size < 1 || steps < 1) {
    return absl::InvalidArgumentError(absl::StrCat(
        "prefix eval: prefix lengths (", prefix_tokens.size(), ", >= 1), budget_fraction=",
        budget_fraction, " (>= 1), page_size=", page_size, " (>= 1), steps=", steps, " (>= 1)"));
  }
  for (int n : prefix_tokens) {
    if (n < 64) return absl::InvalidArgumentError(absl::StrCat("prefix of ", n, " tokens (>= 64)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> PasskeyDocument(const model::LoadedModel& m,
                                                 const std::string& heading, uint32_t passkey,
                                                 int max_tokens) {
  PasskeyCase c{.filler_chars = static_cast<uint32_t>(4 * max_tokens), .depth = 0.5,
                .passkey = passkey};
  for (int attempt = 0; attempt < 8; ++attempt) {
    ASSIGN_OR_RETURN(std::string text, BuildPasskeyPrompt(c));
    text = heading + text.substr(0, text.rfind(kQuestionStart));
    ASSIGN_OR_RETURN(std::vector<int> tokens, Encode(m, text, true));
    if (static_cast<int>(tokens.size()) <= max_tokens) return tokens;
    c.filler_chars =
        static_cast<uint32_t>(c.filler_chars * 0.995 * max_tokens / tokens.size());
  }
  return absl::InternalError("document does not shrink to the token target");
}

absl::StatusOr<Answer> Ask(const model::LoadedModel& m, model::WorkerAttentionBackend& backend,
                           const std::vector<int>& prompt, int steps,
                           model::ReuseEstimator& estimator, bool reuse,
                           const std::string& dense_device) {
  if (prompt.size() + steps > static_cast<size_t>(m.weights.config.max_positions)) {
    return absl::InvalidArgumentError(absl::StrCat("a prompt of ", prompt.size(), " tokens and ",
                                                   steps, " steps exceed the context"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<model::Transformer> t,
                   model::Transformer::Create(&m.weights, &backend, {.device = dense_device}));
  constexpr model::SequenceId kSeq = 1;
  RETURN_IF_ERROR(backend.StartSequence(kSeq));
  Answer a;
  ASSIGN_OR_RETURN(absl::Span<const float> logits,
                   model::PrefillWithReuse(*t, backend, kSeq, prompt, estimator,
                                           {.enabled = reuse, .probe_pages = 64}, &a.report));
  int pos = static_cast<int>(prompt.size());
  a.tokens.push_back(Argmax(logits));
  const absl::Time th = absl::Now();
  RETURN_IF_ERROR(backend.HandOffPrompt(kSeq));
  const absl::Time t0 = absl::Now();
  a.handoff_s = absl::ToDoubleSeconds(t0 - th);
  for (int i = 1; i < steps; ++i) {
    ASSIGN_OR_RETURN(logits, t->Forward(kSeq, a.tokens.back(), pos++));
    a.tokens.push_back(Argmax(logits));
  }
  a.decode_s = absl::ToDoubleSeconds(absl::Now() - t0);
  RETURN_IF_ERROR(backend.EndSequence(kSeq));
  return a;
}

absl::StatusOr<std::string> RunPrefixEval(const model::LoadedModel& m,
                                          const PrefixEvalOptions& o) {
  RETURN_IF_ERROR(o.Validate());
  const model::AttentionShape shape = m.weights.config.attention_shape();
  worker::InProcessPageStore local;
  std::unique_ptr<worker::ClientPageStore> remote;
  worker::PageStoreBackend* store = &local;
  if (!o.target.empty()) {
    ASSIGN_OR_RETURN(remote, worker::ClientPageStore::Connect(o.target, o.client));
    store = remote.get();
  }
  Say(absl::StrCat("store: ", o.target.empty() ? "in-process" : "kvtier-server at " + o.target,
                   "; policy ", o.policy, ", budget 1/", o.budget_fraction, ", pages of ",
                   o.page_size, " tokens"));
  ASSIGN_OR_RETURN(model::ReuseEstimator estimator,
                   model::ReuseEstimator::Create(m.weights.config));
  ASSIGN_OR_RETURN(std::vector<int> q1, Encode(m, kQuestion1, false));
  ASSIGN_OR_RETURN(std::vector<int> q2, Encode(m, kQuestion2, false));
  std::string rows;
  for (int n : o.prefix_tokens) {
    ASSIGN_OR_RETURN(std::vector<int> doc,
                     PasskeyDocument(m, absl::StrCat("Document ", n, ".\n"),
                                     static_cast<uint32_t>(10000 + n % 40000), n));
    std::vector<int> p1 = doc, p2 = doc;
    p1.insert(p1.end(), q1.begin(), q1.end());
    p2.insert(p2.end(), q2.begin(), q2.end());
    const int context = static_cast<int>(std::max(p1.size(), p2.size())) + o.steps;
    if (context > shape.max_positions) {
      return absl::InvalidArgumentError(absl::StrCat("a ", n, "-token prefix with its questions "
                                                     "and steps needs ", context,
                                                     " positions; the model has ",
                                                     shape.max_positions));
    }
    const int budget =
        o.policy == "full" ? 0 : std::max(8 * o.page_size, context / o.budget_fraction);
    ASSIGN_OR_RETURN(std::unique_ptr<model::WorkerAttentionBackend> b,
                     model::WorkerAttentionBackend::Create(
                         shape, {.policy = o.policy, .budget_tokens = budget,
                                 .page_size = o.page_size, .max_sequences = 1,
                                 .prefill_query_rows = 32, .store = store, .prefix_fetch = {},
                                 .device = o.device}));
    Say(absl::StrFormat("prefix %d: document %zu tokens; request 1 (%zu tokens) computes it...",
                        n, doc.size(), p1.size()));
    ASSIGN_OR_RETURN(Answer a1, Ask(m, *b, p1, o.steps, estimator, true, o.device));
    Say(absl::StrFormat("prefix %d: request 1 TTFT %.3f s (then %.3f s handing the prompt to "
                        "the cache), %llu pages backed up",
                        n, a1.report.ttft_s, a1.handoff_s,
                        static_cast<unsigned long long>(b->counters().pages_backed_up)));
    ASSIGN_OR_RETURN(Answer a2, Ask(m, *b, p2, o.steps, estimator, true, o.device));
    const model::PrefixReuseReport& r = a2.report;
    Say(absl::StrFormat("prefix %d: request 2 (%zu tokens): %s; hand-off %.3f s after the first "
                        "token", n, p2.size(), r.DebugString(), a2.handoff_s));
    uint64_t bw_bytes = 0;
    double bandwidth = 0;
    if (r.reused_tokens > 0) {
      ASSIGN_OR_RETURN(bandwidth, MeasureGetBandwidth(*store, *b, p2,
                                                      r.reused_tokens / o.page_size, &bw_bytes));
    }
    const double ideal_s = bandwidth > 0 ? r.fetch.bytes_loaded / bandwidth : 0;
    Say(absl::StrFormat(
        "prefix %d: TTFT %.3f s with reuse vs %.3f s computing (%.1fx); %llu pages loaded "
        "(%.1f MiB) in %.3f s, store get bandwidth %.1f MiB/s (%.3f s for those bytes, load "
        "%.2fx of it); answers:%s |%s",
        n, r.ttft_s, a1.report.ttft_s, a1.report.ttft_s / std::max(r.ttft_s, 1e-9),
        static_cast<unsigned long long>(r.fetch.pages_loaded), r.fetch.bytes_loaded / 1048576.0,
        r.fetch.busy_s, bandwidth / 1048576.0, ideal_s,
        ideal_s > 0 ? r.fetch.busy_s / ideal_s : 0.0, DecodeText(m, p1.back(), a1.tokens),
        DecodeText(m, p2.back(), a2.tokens)));
    absl::StrAppend(
        &rows, rows.empty() ? "" : ",\n",
        absl::StrFormat(
            "    {\"prefix_tokens\": %d, \"document_tokens\": %zu, \"prompt1_tokens\": %zu, "
            "\"prompt2_tokens\": %zu, \"ttft_recompute_s\": %.6f, \"ttft_reuse_s\": %.6f, "
            "\"speedup\": %.3f, \"decided\": %s, \"load\": %s, \"load_estimate_s\": %.6f, "
            "\"recompute_estimate_s\": %.6f, \"reused_tokens\": %u, \"pages_loaded\": %llu, "
            "\"bytes_loaded\": %llu, \"load_busy_s\": %.6f, \"load_wait_s\": %.6f, "
            "\"lookup_s\": %.6f, \"probe_s\": %.6f, \"prefill_rest_s\": %.6f, "
            "\"handoff_recompute_s\": %.6f, \"handoff_reuse_s\": %.6f, "
            "\"get_bytes_per_s\": %.0f, \"load_vs_bandwidth\": %.3f, \"fallbacks\": %u, "
            "\"answer1\": %s, \"answer2\": %s}",
            n, doc.size(), p1.size(), p2.size(), a1.report.ttft_s, r.ttft_s,
            a1.report.ttft_s / std::max(r.ttft_s, 1e-9), r.decided ? "true" : "false",
            r.decision.load ? "true" : "false", r.decision.load_s, r.decision.recompute_s,
            r.reused_tokens, static_cast<unsigned long long>(r.fetch.pages_loaded),
            static_cast<unsigned long long>(r.fetch.bytes_loaded), r.fetch.busy_s,
            r.fetch.wait_s, r.lookup_s, r.probe_s, r.prefill_s, a1.handoff_s, a2.handoff_s,
            bandwidth,
            ideal_s > 0 ? r.fetch.busy_s / ideal_s : 0.0, r.fallbacks,
            JsonString(DecodeText(m, p1.back(), a1.tokens)),
            JsonString(DecodeText(m, p2.back(), a2.tokens))));
  }
  return absl::StrCat("{\n  \"store\": ", JsonString(o.target.empty() ? "in-process" : o.target),
                      ",\n  \"policy\": ", JsonString(o.policy),
                      ",\n  \"budget_fraction\": ", o.budget_fraction,
                      ",\n  \"page_size\": ", o.page_size, ",\n  \"results\": [\n", rows,
                      "\n  ]\n}\n");
}

}  // namespace kvtier::eval
