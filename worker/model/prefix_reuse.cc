#include "worker/model/prefix_reuse.h"

#include <algorithm>
#include <numeric>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "worker/model/dense_attention_backend.h"

namespace kvtier::model {
namespace {

double Since(absl::Time t0) { return absl::ToDoubleSeconds(absl::Now() - t0); }

// The stored prefix in whole pages that end on a prefill row block
// (attention_backend.h), so the rest of the prompt computes exactly as in
// a whole prefill.
uint32_t ReusableTokens(uint32_t stored_pages, int page_size) {
  const uint32_t align = static_cast<uint32_t>(std::lcm(page_size, kPrefillRowBlock));
  return stored_pages * static_cast<uint32_t>(page_size) / align * align;
}

}  // namespace

std::string PrefixReuseReport::DebugString() const {
  std::string s = absl::StrFormat(
      "prompt %u tokens, stored prefix %u pages, reusable %u tokens", prompt_tokens,
      stored_pages, reusable_tokens);
  if (decided) absl::StrAppend(&s, "; estimate: ", decision.DebugString());
  absl::StrAppendFormat(&s,
                        "; reused %u tokens (%llu pages, %.1f MiB loaded in %.3f s busy, "
                        "%.3f s waited); lookup %.3f s, probe %.3f s, prefill %.3f s, TTFT %.3f s",
                        reused_tokens, static_cast<unsigned long long>(fetch.pages_loaded),
                        fetch.bytes_loaded / 1048576.0, fetch.busy_s, fetch.wait_s, lookup_s,
                        probe_s, prefill_s, ttft_s);
  if (fallbacks > 0) absl::StrAppend(&s, "; fell back to recompute: ", fallback_reason);
  return s;
}

absl::StatusOr<absl::Span<const float>> PrefillWithReuse(
    Transformer& transformer, WorkerAttentionBackend& backend, SequenceId seq,
    absl::Span<const int> prompt, ReuseEstimator& estimator, const PrefixReuseOptions& options,
    PrefixReuseReport* report) {
  if (prompt.empty()) return absl::InvalidArgumentError("prefill of no tokens");
  if (options.probe_pages < 1) return absl::InvalidArgumentError("probe_pages must be >= 1");
  PrefixReuseReport r;
  r.prompt_tokens = static_cast<uint32_t>(prompt.size());
  const absl::Time t0 = absl::Now();
  const int page = backend.page_size();
  const uint32_t n_layers = static_cast<uint32_t>(backend.shape().n_layers);
  uint32_t load_pages = 0;
  if (options.enabled) {
    const uint32_t max_pages = static_cast<uint32_t>((prompt.size() - 1) / page);
    absl::StatusOr<uint32_t> stored = backend.LookupPrefix(prompt, max_pages);
    r.lookup_s = Since(t0);
    // A store that cannot answer costs this request its reuse, not its answer.
    if (stored.ok()) r.stored_pages = *stored;
    r.reusable_tokens = ReusableTokens(r.stored_pages, page);
  }
  if (r.reusable_tokens > 0) {
    const uint32_t pages = r.reusable_tokens / page;
    if (!estimator.knows_bandwidth()) {
      const absl::Time tp = absl::Now();
      absl::StatusOr<PrefixFetchStats> probe =
          backend.ProbePrefix(prompt, std::min(pages, options.probe_pages));
      r.probe_s = Since(tp);
      if (probe.ok()) estimator.ObserveLoad(probe->bytes_loaded, probe->busy_s);
    }
    const uint32_t batch = std::max<uint32_t>(1, backend.prefix_fetch_options().batch_pages);
    absl::StatusOr<ReuseDecision> decision = estimator.Decide(
        r.reusable_tokens, uint64_t{pages} * n_layers * backend.page_bytes(),
        (pages + batch - 1) / batch * n_layers);
    if (decision.ok()) {
      r.decided = true;
      r.decision = *decision;
      if (decision->load) load_pages = pages;
    }
  }
  absl::StatusOr<absl::Span<const float>> logits;
  if (load_pages > 0) {
    RETURN_IF_ERROR(backend.LoadPrefix(seq, prompt, load_pages));
    const int reused = static_cast<int>(load_pages) * page;
    const absl::Time tp = absl::Now();
    logits = transformer.Prefill(seq, prompt.subspan(reused), reused);
    r.prefill_s = Since(tp);
    ASSIGN_OR_RETURN(r.fetch, backend.prefix_stats(seq));
    if (logits.ok()) {
      r.reused_tokens = static_cast<uint32_t>(reused);
      estimator.ObserveLoad(r.fetch.bytes_loaded, r.fetch.busy_s);
      estimator.ObservePrefill(reused, r.prompt_tokens,
                               std::max(r.prefill_s - r.fetch.wait_s, 1e-9));
      r.ttft_s = Since(t0);
      if (report != nullptr) *report = r;
      return logits;
    }
    ASSIGN_OR_RETURN(bool rejected, backend.reuse_failed(seq));
    if (!rejected) return logits.status();
    // Never served: start over and compute everything.
    r.fallbacks = 1;
    r.fallback_reason = logits.status().ToString();
    RETURN_IF_ERROR(backend.EndSequence(seq));
    RETURN_IF_ERROR(backend.StartSequence(seq));
  }
  const absl::Time tp = absl::Now();
  logits = transformer.Prefill(seq, prompt, 0);
  r.prefill_s = Since(tp);
  if (!logits.ok()) return logits.status();
  estimator.ObservePrefill(0, r.prompt_tokens, r.prefill_s);
  r.ttft_s = Since(t0);
  if (report != nullptr) *report = r;
  return logits;
}

absl::Status CalibratePrefill(const ModelWeights& weights, int tokens, ReuseEstimator& estimator) {
  const ModelConfig& c = weights.config;
  if (tokens < 2 || tokens > c.max_positions) {
    return absl::InvalidArgumentError(
        absl::StrCat("calibration prompt of ", tokens, " tokens; 2..", c.max_positions));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<DenseAttentionBackend> dense,
                   DenseAttentionBackend::Create(c.attention_shape()));
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> t, Transformer::Create(&weights, dense.get()));
  std::vector<int> ids(tokens);
  for (int i = 0; i < tokens; ++i) ids[i] = 1 + i % std::max(1, c.vocab_size - 1);
  // The second run is measured: the first warms caches and allocations.
  double best_s = 0;
  for (int run = 0; run < 2; ++run) {
    RETURN_IF_ERROR(dense->StartSequence(1));
    const absl::Time t0 = absl::Now();
    RETURN_IF_ERROR(t->Prefill(1, ids, 0).status());
    best_s = Since(t0);
    RETURN_IF_ERROR(dense->EndSequence(1));
  }
  estimator.ObservePrefill(0, static_cast<uint32_t>(tokens), best_s);
  return absl::OkStatus();
}

}  // namespace kvtier::model
