// Helpers shared by the prefix reuse tests: stories260K, prompts that share
// a prefix, and one request (prefill with reuse, then greedy decoding)
// whose every logit row is kept for exact comparison.
#ifndef KVTIER_WORKER_MODEL_PREFIX_REUSE_TESTING_H_
#define KVTIER_WORKER_MODEL_PREFIX_REUSE_TESTING_H_

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/page_key.h"
#include "common/status_macros.h"
#include "worker/model/loader/model_loader.h"
#include "worker/model/prefix_reuse.h"
#include "worker/model/transformer.h"
#include "worker/model/worker_attention_backend.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::model::testing {

inline constexpr int kPageSize = 16;

// Token ids: a 300-token shared prefix, then 20 tokens that differ by
// `question` (stories260K has 512 ids).
inline std::vector<int> SharedPrefixPrompt(int question) {
  std::vector<int> ids;
  ids.push_back(1);  // BOS
  for (int i = 1; i < 300; ++i) ids.push_back(2 + (i * 37) % 500);
  for (int i = 0; i < 20; ++i) ids.push_back(2 + (i * 11 + question * 101) % 500);
  return ids;
}

// The stories260K page layout as WorkerAttentionBackend builds it.
inline PageLayout StoriesLayout() {
  return PageLayout{.page_size = kPageSize, .n_kv_heads = 4, .head_dim = 8, .dtype = DType::kF32};
}

// The chain hash of page `page` of `prompt` under the backend's seed.
inline Hash128 PageHashOf(const std::vector<int>& prompt, uint32_t page) {
  std::vector<uint32_t> ids(prompt.begin(), prompt.end());
  const Hash128 seed = KeyChain::Seed("", "kvtier-model", StoriesLayout());
  return KeyChain::Chain(seed, ids, kPageSize)[page];
}

inline absl::StatusOr<std::unique_ptr<WorkerAttentionBackend>> MakeBackend(
    const ModelWeights& weights, worker::PageStoreBackend* store) {
  return WorkerAttentionBackend::Create(
      weights.config.attention_shape(),
      {.policy = "arkvale", .budget_tokens = 128, .page_size = kPageSize, .max_sequences = 1,
       .prefill_query_rows = 32, .store = store, .prefix_fetch = {}});
}

struct Request {
  std::vector<std::vector<float>> logits;  // after the prompt, then per step
  PrefixReuseReport report;
};

// One request: `prompt` admitted with reuse (unless disabled), then
// `steps - 1` greedy tokens.
inline absl::StatusOr<Request> RunRequest(const ModelWeights& weights,
                                          WorkerAttentionBackend& backend,
                                          const std::vector<int>& prompt, int steps,
                                          ReuseEstimator& estimator,
                                          const PrefixReuseOptions& options = {}) {
  ASSIGN_OR_RETURN(std::unique_ptr<Transformer> t, Transformer::Create(&weights, &backend));
  RETURN_IF_ERROR(backend.StartSequence(1));
  Request r;
  ASSIGN_OR_RETURN(absl::Span<const float> logits,
                   PrefillWithReuse(*t, backend, 1, prompt, estimator, options, &r.report));
  int pos = static_cast<int>(prompt.size());
  for (int i = 0; i < steps; ++i) {
    r.logits.emplace_back(logits.begin(), logits.end());
    if (i + 1 == steps) break;
    const int next = static_cast<int>(std::max_element(logits.begin(), logits.end()) -
                                      logits.begin());
    ASSIGN_OR_RETURN(logits, t->Forward(1, next, pos++));
  }
  RETURN_IF_ERROR(backend.EndSequence(1));
  return r;
}

// The reference for a request: `prompt` recomputed (reuse off) against an
// empty store of its own.
inline absl::StatusOr<Request> RecomputedRequest(const ModelWeights& weights,
                                                 const std::vector<int>& prompt, int steps,
                                                 ReuseEstimator& estimator) {
  worker::InProcessPageStore empty;
  ASSIGN_OR_RETURN(std::unique_ptr<WorkerAttentionBackend> backend, MakeBackend(weights, &empty));
  return RunRequest(weights, *backend, prompt, steps, estimator,
                    {.enabled = false, .probe_pages = 64});
}

// An estimator whose rates are fixed: loading always wins unless the
// store is made slow.
inline absl::StatusOr<ReuseEstimator> FixedEstimator(const ModelConfig& c,
                                                     double get_bytes_per_s) {
  return ReuseEstimator::Create(
      c, {.get_bytes_per_s = get_bytes_per_s, .prefill_flops_per_s = 1e9,
          .batch_latency_s = 200e-6, .smoothing = 0.5});
}

}  // namespace kvtier::model::testing

#endif  // KVTIER_WORKER_MODEL_PREFIX_REUSE_TESTING_H_
