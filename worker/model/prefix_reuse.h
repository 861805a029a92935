// Admission with prefix reuse: a prompt whose leading pages are stored
// (by an earlier request, here or on another worker of the same store) is
// started from them instead of being prefilled from scratch.
//
//   1. the prompt's key chain is looked up (one Lookup for every layer);
//   2. the reusable prefix is the stored pages, cut to a multiple of the
//      prefill row block (kPrefillRowBlock, attention_backend.h) and to at
//      most the prompt less one token; since prefill rows never depend on
//      how the prompt was batched, the rest of the prompt (the partial last
//      page included) computes exactly as in a whole prefill: on the CPU
//      the logits are bit-identical;
//   3. the ReuseEstimator compares loading those bytes with recomputing
//      that prefix (the first request measures the store with a probe get
//      of layer 0's pages); a prefix is loaded only when that is faster;
//   4. the load runs layer by layer beside the prefill of the rest;
//   5. a page the load rejects (missing, wrong layout or checksum) is never
//      served: the sequence starts over and the whole prompt is recomputed,
//      and the report counts the fallback.
//
// Thread-safety: none; one admission thread.
#ifndef KVTIER_WORKER_MODEL_PREFIX_REUSE_H_
#define KVTIER_WORKER_MODEL_PREFIX_REUSE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/model/prefix_fetch.h"
#include "worker/model/reuse_estimator.h"
#include "worker/model/transformer.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::model {

struct PrefixReuseOptions {
  // Look up and load stored prefixes. Default true; false prefills
  // everything (the baseline).
  bool enabled = true;
  // Pages of layer 0 the probe get reads while the store's bandwidth is
  // unknown. Default 64; >= 1.
  uint32_t probe_pages = 64;
};

// What admission did for one prompt.
struct PrefixReuseReport {
  uint32_t prompt_tokens = 0;
  uint32_t stored_pages = 0;    // the lookup's answer (within the prompt)
  uint32_t reusable_tokens = 0;  // after the batch alignment
  bool decided = false;         // the estimator was asked
  ReuseDecision decision;
  uint32_t reused_tokens = 0;   // loaded and served
  PrefixFetchStats fetch;
  uint32_t fallbacks = 0;       // rejected loads, recomputed instead
  std::string fallback_reason;
  double lookup_s = 0;
  double probe_s = 0;
  double prefill_s = 0;  // the prompt after the prefix (the load overlapped)
  double ttft_s = 0;     // admission to the first token's logits

  std::string DebugString() const;
};

// Prefills `prompt` (positions 0..) on the started, empty sequence `seq`
// of `backend` through `transformer` (whose backend it is), loading the
// stored prefix when `estimator` says so, and feeds the estimator what it
// measured. Returns the logits after the last prompt token (valid until
// the transformer's next call). INVALID_ARGUMENT for an empty prompt.
absl::StatusOr<absl::Span<const float>> PrefillWithReuse(
    Transformer& transformer, WorkerAttentionBackend& backend, SequenceId seq,
    absl::Span<const int> prompt, ReuseEstimator& estimator, const PrefixReuseOptions& options,
    PrefixReuseReport* report);

// Measures the model's prefill speed with a `tokens`-token prompt through
// the dense backend (about a second on SmolLM2-135M) and tells
// `estimator`. REQUIRES: 2 <= tokens <= the model's context.
absl::Status CalibratePrefill(const ModelWeights& weights, int tokens,
                              ReuseEstimator& estimator);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_PREFIX_REUSE_H_
