// ArkvalePolicy: recallable page eviction (ArkVale, NeurIPS'24; see
// ALGORITHMS.md §1). Every full page is backed up and digested (cuboid-mean
// by default); when a layer holds more pages than its budget, each step
// scores all digested pages, keeps the sink and window pages plus the
// top-k_eff others, and recalls winners that are not resident into the
// slots of the lowest-scoring resident candidates. Attention reads every
// resident page (top-k only decides residency, as in the authors' code).
//
// Choices where the code and paper leave room:
//   - One ranking per layer (n_groups = 1): scores summed over all heads.
//     Per-KV-head rankings (n_groups = Hkv) are not implemented.
//   - Window: the last n_win_pages pages of the sequence, whether or not
//     the newest is full. ArkVale digests a page only when the next token
//     opens a new one; we digest and back up a page as soon as it is full,
//     so a just-filled last page is in the window as a digested page.
//   - When a new page opens at budget, the page that leaves the window gives
//     up its slot (ArkVale's "oldest window page drops off"); if it is not
//     resident, the oldest resident non-sink, non-window page does.
//   - Prefill: the cache manager appends the prompt page by page under the
//     budget (evicting as above); the plan that ends the prefill then keeps
//     the sinks, the window and the top budget - ns - nw pages by the last
//     prompt token's query, recalling those that were evicted while
//     appending.
#ifndef KVTIER_WORKER_POLICY_ARKVALE_POLICY_H_
#define KVTIER_WORKER_POLICY_ARKVALE_POLICY_H_

#include <cstdint>

#include "absl/status/status.h"
#include "worker/policy/policy.h"

namespace kvtier::worker {

struct ArkvaleOptions {
  // Sink pages always kept: 1 as in the benchmark scripts (the class
  // default is 2).
  uint32_t n_sink_pages = 1;
  // Window pages always kept (>= 2, asserted by the authors' code).
  uint32_t n_win_pages = 2;
  // Pages selected per decode step, sinks and window included; 0 means
  // budget / 2. Must be below the budget. The scripts use 32.
  uint32_t topk_pages = 32;
  // The first layers keep a full cache and are never scored (the scripts
  // and the paper use 2).
  uint32_t n_unlimited_layers = 2;
  // Digest kind: cuboid-mean is ArkVale's default (paper Fig. 7).
  kernels::DigestKind digest_kind = kernels::DigestKind::kArkvaleMean;

  absl::Status Validate() const;
};

class ArkvalePolicy : public Policy {
 public:
  static absl::StatusOr<std::unique_ptr<ArkvalePolicy>> Create(ArkvaleOptions options);

  std::string_view name() const override { return "arkvale"; }
  bool offloads() const override { return true; }
  kernels::DigestKind digest_kind() const override { return options_.digest_kind; }
  bool NeedsScores(const LayerView& view) const override;
  absl::StatusOr<PagePlan> Plan(const LayerView& view) override;
  int32_t AppendVictim(const LayerView& view) override;

  // top-k for a layer budget: topk_pages, or budget / 2 when it is 0.
  uint32_t TopK(uint32_t budget_pages) const;
  const ArkvaleOptions& options() const { return options_; }

 private:
  explicit ArkvalePolicy(ArkvaleOptions options) : options_(options) {}
  bool Dense(const LayerView& view) const;

  const ArkvaleOptions options_;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_ARKVALE_POLICY_H_
