// QuestPolicy: query-aware page selection without eviction (Quest, ICML'24;
// ALGORITHMS.md §2). The whole cache stays resident (the budget must cover
// the context); each decode step attends only the last page plus the
// top-(page_budget - 1) other pages by the min/max digest's upper bound of
// q.k. Prefill, the first n_dense_layers layers and sequences of at most
// page_budget pages attend densely.
//
// GQA: Quest selects per query head and its kernel is MHA-only. [interp]
// By default one ranking by the score summed over all heads serves every
// head (like ArkVale's n_groups = 1). With per_kv_head each KV head takes
// its own top pages by the score summed over its query heads (the
// group-mean option of ALGORITHMS.md: Quest's per-head lists where G = 1).
// On SmolLM2 passkey prompts per-KV-head lists found fewer keys than the
// shared ranking (worker/policy/README.md), so they are not the default.
//
// With `offload` (kvtier's Quest under a memory budget; the paper keeps
// every page in GPU memory) the pool holds only what a step attends: every
// full page is backed up, each plan, the one that ends the prefill
// included, keeps resident exactly the pages it attends (the last page and
// the top budget_pages - 1 others of the layer's budget), and a page a
// later step chooses is recalled. Attention reads the same pages as
// without it; only where they live changes.
#ifndef KVTIER_WORKER_POLICY_QUEST_POLICY_H_
#define KVTIER_WORKER_POLICY_QUEST_POLICY_H_

#include <memory>

#include "absl/status/status.h"
#include "worker/policy/policy.h"

namespace kvtier::worker {

struct QuestOptions {
  // Pages attended per step, the last page included: token_budget / P.
  // Quest's kernel path; >= 2.
  uint32_t page_budget = 64;
  // Layers that always attend densely (Quest: layers 0 and 1).
  uint32_t n_dense_layers = 2;
  // One page list per KV head (true) or one shared by all heads.
  bool per_kv_head = false;
  // Keep resident only the attended pages, recalling the rest on demand
  // (the file comment); the layer's budget_pages, not page_budget, then
  // sets how many pages a step attends. Not with per_kv_head, whose lists'
  // union can exceed any budget.
  bool offload = false;
  // Rank pages by the query's exact attention mass on them (summed over
  // the query heads) instead of the min/max bound: what Quest's per-step
  // top-k would attend with a perfect estimator (a diagnostic,
  // `quest_exact`): every digested page a rerank candidate. Not with
  // offload (it reads every page).
  bool exact_scores = false;
  // With r > 0, the bounds name r times the pages a step attends and the
  // query's exact attention mass on them chooses (Policy::
  // rerank_candidates). Not with offload.
  uint32_t rerank = 0;

  absl::Status Validate() const;
};

class QuestPolicy : public Policy {
 public:
  static absl::StatusOr<std::unique_ptr<QuestPolicy>> Create(QuestOptions options);

  std::string_view name() const override {
    if (options_.exact_scores) return "quest_exact";
    if (options_.rerank > 0) return "quest_rerank";
    return "quest";
  }
  bool offloads() const override { return options_.offload; }
  kernels::DigestKind digest_kind() const override { return kernels::DigestKind::kMinMax; }
  uint32_t rerank_candidates(const LayerView& view) const override;
  bool NeedsScores(const LayerView& view) const override;
  absl::StatusOr<PagePlan> Plan(const LayerView& view) override;
  int32_t AppendVictim(const LayerView& view) override;

 private:
  explicit QuestPolicy(QuestOptions options) : options_(options) {}
  // Pages a step attends: page_budget, or the layer's budget when offloading.
  uint32_t Attended(const LayerView& view) const;
  const QuestOptions options_;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_QUEST_POLICY_H_
