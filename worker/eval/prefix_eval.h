// kvtier-eval prefix: time to first token with and without prefix reuse.
//
// For each prefix length N, a document of about N tokens (a passkey text
// under its own heading, so no two lengths share pages) is asked two
// questions in turn through one worker and one store:
//
//   1. document + question 1: nothing is stored yet, so it is computed
//      (its TTFT is the recompute figure) and its pages are backed up;
//   2. document + question 2: admitted with prefix reuse (the estimator
//      decides; the first request measured the prefill speed, a probe the
//      store), then the store's get bandwidth is measured on the same
//      pages with plain batched gets, so the load can be compared with
//      bytes / bandwidth.
//
// Each request decodes `steps` greedy tokens. Results: one line per length
// on stderr, the JSON to --json, a plot of both TTFTs against N to --png
// (ops/eval/prefix_report.py).
//
// Thread-safety: none.
#ifndef KVTIER_WORKER_EVAL_PREFIX_EVAL_H_
#define KVTIER_WORKER_EVAL_PREFIX_EVAL_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "client/store_client.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/prefix_reuse.h"
#include "worker/model/worker_attention_backend.h"

namespace kvtier::eval {

// The two questions asked of a document (passkey.h's text ends before its
// question): the first is passkey.h's own.
inline constexpr char kQuestion1[] = " What is the pass key? The pass key is";
inline constexpr char kQuestion2[] =
    " Which number did the text ask you to remember? The number is";

// BOS, `heading`, then a passkey text (passkey at half depth) without its
// question, fitted to at most `max_tokens` tokens.
absl::StatusOr<std::vector<int>> PasskeyDocument(const model::LoadedModel& m,
                                                 const std::string& heading, uint32_t passkey,
                                                 int max_tokens);

// One request: `prompt` admitted (with reuse unless `reuse` is false),
// then `steps` greedy tokens; the sequence is started and ended here.
struct Answer {
  model::PrefixReuseReport report;
  std::vector<int> tokens;
  double handoff_s = 0;  // the prompt's hand-off, after the first token
  double decode_s = 0;
};
absl::StatusOr<Answer> Ask(const model::LoadedModel& m, model::WorkerAttentionBackend& backend,
                           const std::vector<int>& prompt, int steps,
                           model::ReuseEstimator& estimator, bool reuse,
                           const std::string& dense_device = "cpu");

struct PrefixEvalOptions {
  std::string target = "127.0.0.1:50051";  // kvtier-server; empty: in-process store
  client::ClientOptions client;
  std::vector<int> prefix_tokens = {1024, 2048, 4096, 8064};
  std::string policy = "arkvale";
  int budget_fraction = 8;  // budget = context / this (full: the context)
  int page_size = 16;
  // Where the worker's KV pools and decode attention run: "cpu", "cuda",
  // "cuda:N" (model::WorkerBackendOptions::device).
  std::string device = "cpu";
  int steps = 8;            // greedy tokens after each prompt
  absl::Status Validate() const;
};

// Returns the JSON report.
absl::StatusOr<std::string> RunPrefixEval(const model::LoadedModel& m,
                                          const PrefixEvalOptions& o);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_PREFIX_EVAL_H_
