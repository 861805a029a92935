// DigestStudy: how well each page digest ranks pages against the exact
// attention, by page size, digest kind and selection granularity
// (fidelity_metrics.h defines recall@k and mass@k), accumulated over many
// queries: every decode step of every layer of a trace and the last prompt
// query (the one that chooses ArkVale's prefill pages).
//
// k is either absolute (recall@1) or a budget fraction (k = ceil(full pages
// / f), so pages of 16 and 32 are compared at equal tokens). Queries whose
// context has no more full pages than k do not count towards that k.
//
// Thread-safety: none.
#ifndef KVTIER_WORKER_EVAL_DIGEST_STUDY_H_
#define KVTIER_WORKER_EVAL_DIGEST_STUDY_H_

#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/eval/fidelity_metrics.h"
#include "worker/trace/trace.h"

namespace kvtier::eval {

struct DigestStudyOptions {
  std::vector<uint32_t> page_sizes = {16, 32};
  std::vector<uint32_t> ks = {1};                       // absolute
  std::vector<uint32_t> budget_fractions = {4, 8, 16};  // k = ceil(pages / f)
  std::vector<kernels::DigestKind> kinds = {kernels::DigestKind::kMinMax,
                                            kernels::DigestKind::kArkvaleMean,
                                            kernels::DigestKind::kCentroid};
  std::vector<Selection> selections = {Selection::kShared, Selection::kPerKvHead,
                                       Selection::kPerQueryHead};
  // Also rank by the exact attention mass (digest "exact"): the most mass
  // any ranking can hold at k, the bound the digests are measured against.
  bool exact_ranking = true;
};

class DigestStudy {
 public:
  // INVALID_ARGUMENT for a bad geometry, an empty or zero page size, k or
  // fraction, or no k at all.
  static absl::StatusOr<DigestStudy> Create(uint32_t n_q_heads, uint32_t n_kv_heads,
                                            uint32_t head_dim, DigestStudyOptions options);

  // One query [n_q_heads][head_dim] over every key it sees,
  // [n_tokens][n_kv_heads][head_dim] (its own included).
  absl::Status Add(absl::Span<const float> keys, absl::Span<const float> q);

  // Every decode step of every layer of `trace` plus its last prompt query;
  // `on_layer(l)` after each layer. INVALID_ARGUMENT when the trace's heads
  // differ from the study's.
  absl::Status AddTrace(const TraceReader& trace,
                        const std::function<void(uint32_t layer)>& on_layer = nullptr);

  // A JSON array of {"page_size", "digest", "selection", "k" ("1", "1/8"),
  // "recall", "mass", "samples"}, in option order.
  std::string Json() const;

 private:
  struct Cell {
    double recall = 0, mass = 0, samples = 0;
  };
  DigestStudy(uint32_t n_q_heads, uint32_t n_kv_heads, uint32_t head_dim,
              DigestStudyOptions options);
  size_t CellIndex(size_t page_size, size_t kind, size_t selection, size_t k) const;
  size_t n_k() const { return options_.ks.size() + options_.budget_fractions.size(); }
  size_t n_rankings() const { return options_.kinds.size() + (options_.exact_ranking ? 1 : 0); }

  uint32_t n_q_heads_, n_kv_heads_, head_dim_;
  DigestStudyOptions options_;
  std::vector<Cell> cells_;
};

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_DIGEST_STUDY_H_
