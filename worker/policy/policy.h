// Policy: decides, per decode step and layer, which pages of a sequence are
// resident in the page pool and which of those attention reads.
//
// The cache manager owns the pages; a policy only sees a LayerView and
// returns a PagePlan. The manager then evicts what the plan drops, recalls
// what it adds (when the policy offloads), checks the plan against the
// budget and the invariants below, and the decode step attends over
// plan.attend. Policies are stateless across sequences unless they say so.
// Policies are called from the one decode thread that owns the cache
// manager and need not be thread-safe.
//
// Invariants every plan must keep (the manager rejects a plan that breaks
// them with INTERNAL):
//   - |resident| <= budget_pages of the (sequence, layer);
//   - the sequence's last page (the one being filled) is resident;
//   - attend is a subset of resident;
//   - head_attend, when not empty, holds one ascending list per KV head,
//     each a subset of attend that ends with the sequence's last page;
//   - pages the policy cannot recall (offloads() false, or not stored) are
//     never added to resident once they have left it.
#ifndef KVTIER_WORKER_POLICY_POLICY_H_
#define KVTIER_WORKER_POLICY_POLICY_H_

#include <cstdint>
#include <limits>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/digest.h"
#include "worker/policy/page_state.h"

namespace kvtier::worker {

// What a policy may look at for one (sequence, layer). Pages are numbered
// 0..n_pages-1 in sequence order; page n_pages-1 may be partial.
struct LayerView {
  uint32_t layer = 0;
  uint32_t n_pages = 0;
  uint32_t n_tokens = 0;
  uint32_t page_size = 0;
  uint32_t budget_pages = 0;
  absl::Span<const PageState> states;  // n_pages entries
  // Pages [0, n_digested) have digests; n_digested is n_pages when the last
  // page is full, else n_pages - 1.
  uint32_t n_digested = 0;
  // Importance of each digested page for the current query (the sum over
  // all heads of the estimate; see estimate.h), n_digested entries. Empty
  // when the policy does not need scores for this layer or step.
  absl::Span<const float> scores;
  // The same estimate per KV head (the sum over its query heads):
  // n_kv_heads rows of n_digested, row g at g * n_digested. Filled whenever
  // scores is.
  absl::Span<const float> head_scores;
  // True for the plan that ends a prefill (scores from the last prompt
  // token's query), false for decode steps.
  bool prefill = false;
};

struct PagePlan {
  std::vector<int32_t> resident;  // ascending page numbers
  std::vector<int32_t> attend;    // ascending page numbers
  // Empty: every KV head attends `attend`. Else KV head g attends
  // head_attend[g] (per-head selection, Quest's per-head top-k), and
  // `attend` is the union of the lists.
  std::vector<std::vector<int32_t>> head_attend;
};

class TokenPolicy;

class Policy {
 public:
  virtual ~Policy() = default;
  virtual std::string_view name() const = 0;

  // Whether full pages are backed up to the store and may be recalled.
  virtual bool offloads() const = 0;
  // Digest kind kept for every full page (cuboid for ArkVale, min/max for
  // Quest).
  virtual kernels::DigestKind digest_kind() const { return kernels::DigestKind::kArkvaleMean; }
  // When positive: the digests' estimate names this many candidate pages
  // (every page when there are fewer), and `scores` then ranks them by the
  // query's exact attention mass (other pages score -1). Every candidate
  // must be resident.
  virtual uint32_t rerank_candidates(const LayerView& /*view*/) const { return 0; }
  // Whether Plan() needs `scores` for this view (estimation is skipped
  // otherwise: it is the step's most frequent cost).
  virtual bool NeedsScores(const LayerView& view) const = 0;

  // The plan for the step whose query produced view.scores.
  virtual absl::StatusOr<PagePlan> Plan(const LayerView& view) = 0;

  // A new page is about to open while the (sequence, layer) holds
  // budget_pages resident pages: the resident page to give up its slot.
  // view.n_pages does not yet count the new page. -1 when none may go
  // (the manager then fails the append with RESOURCE_EXHAUSTED).
  virtual int32_t AppendVictim(const LayerView& view) = 0;

  // KV bytes the policy holds now outside the page pool for `layer`, over
  // all its sequences (ARKV's quantized tier); 0 for policies that keep
  // none.
  virtual uint64_t own_layer_kv_bytes(uint32_t /*layer*/) const { return 0; }

  // Non-null for token-level policies (token_policy.h), which the decode
  // step drives differently.
  virtual TokenPolicy* AsTokenPolicy() { return nullptr; }
};

// Helpers shared by policies.
// Pages [0, n) in ascending order.
std::vector<int32_t> AllPages(uint32_t n);
// The resident pages of `view`, ascending.
std::vector<int32_t> ResidentPages(const LayerView& view);
// A page score as every ranking compares it: NaN (keys beyond fp16 in an
// fp16 digest, a damaged model) below every number, as kernels/topk.h
// ranks it, so that sorts by it see a strict order.
inline float RankedScore(float s) {
  return s != s ? -std::numeric_limits<float>::infinity() : s;
}
// The first `sink` and last `recent` of scores.size() pages plus the best
// others by score, k in all (kernels/topk.h ordering), ascending.
absl::StatusOr<std::vector<int32_t>> TopKPages(absl::Span<const float> scores, uint32_t k,
                                               uint32_t sink, uint32_t recent);

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_POLICY_H_
