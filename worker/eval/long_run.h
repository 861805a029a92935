// The long-context demo of the main job: SmolLM2 (or any model) decodes a
// long prompt under a budgeted policy whose pages are backed up to and
// recalled from a running kvtier-server, printing progress, and compares
// its greedy output with a full-cache run of the same prompt.
//
// Thread-safety: none.
#ifndef KVTIER_WORKER_EVAL_LONG_RUN_H_
#define KVTIER_WORKER_EVAL_LONG_RUN_H_

#include <string>

#include "absl/status/status.h"
#include "client/store_client.h"
#include "worker/model/loader/model_loader.h"

namespace kvtier::eval {

struct LongRunOptions {
  std::string target = "127.0.0.1:50051";  // kvtier-server; empty: in-process store
  client::ClientOptions client;             // how to reach it (TLS)
  std::string policy = "arkvale";
  int prompt_tokens = 2048;  // passkey prompt size (at most)
  // The document around the secret: "travel" or "workshop" (prose notes,
  // needle_suite.h; a six-digit code at half depth) or "landmark" (the
  // papers' five sentences repeated, passkey 31415). On the landmark
  // filler a budgeted run loops where the full cache cycles the filler
  // (worker/eval/README.md says why), so the prose is the default.
  std::string filler = "travel";
  int steps = 96;            // greedy decode steps
  int budget_fraction = 8;   // budget = (prompt + steps) / fraction tokens
  int page_size = 16;
  // Where the worker's KV pools and decode attention run: "cpu", "cuda",
  // "cuda:N" (model::WorkerBackendOptions::device).
  std::string device = "cpu";
  int progress_every = 16;   // decode steps between progress lines
  // Then the same document with another question, admitted with prefix
  // reuse and recomputed, side by side (TTFT, pages loaded, answers).
  bool second_question = true;
  int answer_steps = 8;      // greedy tokens of each answer
  absl::Status Validate() const;
};

// Prints progress and the summary to stderr, both continuations to stdout.
absl::Status RunLong(const model::LoadedModel& m, const LongRunOptions& o);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_LONG_RUN_H_
