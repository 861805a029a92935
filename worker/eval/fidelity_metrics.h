// Fidelity metrics of a budgeted KV cache against the full cache, computed
// from real queries and keys (a trace) or from two runs' logits.
//
// Page estimators: for one query of one layer, how well a digest ranks the
// context's full pages compared with the exact attention.
//   True importance of a page: the largest attention probability any of its
//   tokens gets, per query head, averaged over the layer's query heads (the
//   definition of digest_recall.h, ArkVale Fig. 7).
//   Estimated importance: the digest score (kernels' estimate.h) summed over
//   KV heads, as the policies rank pages.
//   recall@k   = |top_k(estimate) ∩ top_k(true)| / k
//   mass@k     = attention probability (averaged over query heads) held by
//                the estimator's top k full pages; the partial last page is
//                not a candidate (every policy keeps it).
// Selection granularity: one ranking shared by all heads (ArkVale's
// n_groups = 1, Quest's default here), one per KV head (the sum over its
// query heads), or one per query head (Quest's evaluation path). A ranking
// is judged against the mean true importance of the query heads it serves,
// and recall and mass are averaged over the rankings.
// Rankings break ties toward the lower page index.
//
// Next-token distributions: greedy agreement and KL(reference || test) in
// nats of the softmax of two logit vectors, in double precision.
//
// Thread-safety: stateless functions.
#ifndef KVTIER_WORKER_EVAL_FIDELITY_METRICS_H_
#define KVTIER_WORKER_EVAL_FIDELITY_METRICS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "kernels/digest.h"

namespace kvtier::eval {

struct AttentionGeometry {
  uint32_t n_q_heads = 0;   // multiple of n_kv_heads
  uint32_t n_kv_heads = 0;
  uint32_t head_dim = 0;
  uint32_t page_size = 0;
  absl::Status Validate() const;
};

// Which query heads share one page ranking.
enum class Selection { kShared, kPerKvHead, kPerQueryHead };
// "shared", "kv_head", "q_head".
std::string SelectionName(Selection s);

// Exact attention of one query over n_tokens keys, summarised per page.
struct PageAttention {
  uint32_t full_pages = 0;       // floor(n_tokens / page_size): the candidates
  std::vector<double> max_prob;  // [full_pages]: the true importance
  std::vector<double> mass;      // [full_pages]: probability held by the page
  // The same per query head, [n_q_heads][full_pages] (not averaged).
  std::vector<double> head_max_prob;
  std::vector<double> head_mass;
};

// keys: [n_tokens][n_kv_heads][head_dim], q: [n_q_heads][head_dim]. Scores are
// q.k / sqrt(head_dim). INVALID_ARGUMENT on bad geometry or sizes.
absl::StatusOr<PageAttention> ExactPageAttention(const AttentionGeometry& g,
                                                 absl::Span<const float> keys,
                                                 absl::Span<const float> q);

// Digest scores of every full page for `q` with the kernels' digest of
// `kind`, for per-`selection` rankings: [rows][full pages] with rows
// 1 (the sum over every head), n_kv_heads (the sum over each KV head's
// query heads) or n_q_heads.
absl::StatusOr<std::vector<float>> DigestPageRows(const AttentionGeometry& g,
                                                  kernels::DigestKind kind,
                                                  absl::Span<const float> keys,
                                                  absl::Span<const float> q, Selection selection);

// Indices of the k highest scores, ties to the lower index. k is clamped to
// the number of scores.
template <typename T>
std::vector<uint32_t> TopK(absl::Span<const T> scores, uint32_t k);

struct EstimatorQuality {
  std::vector<double> recall;  // per k; -1 when the context has <= k pages
  std::vector<double> mass;    // per k; -1 likewise
};

// INVALID_ARGUMENT when scores and attention disagree in page count or a k
// is zero.
absl::StatusOr<EstimatorQuality> EvaluateEstimator(const PageAttention& exact,
                                                   absl::Span<const float> scores,
                                                   absl::Span<const uint32_t> ks);

// The same for the rankings of DigestPageRows(selection); `exact` must come
// from ExactPageAttention with geometry `g` (per-head arrays filled).
absl::StatusOr<EstimatorQuality> EvaluateSelection(const AttentionGeometry& g,
                                                   const PageAttention& exact,
                                                   absl::Span<const float> rows,
                                                   Selection selection,
                                                   absl::Span<const uint32_t> ks);

// "minmax", "arkvale", "centroid".
std::string DigestKindName(kernels::DigestKind kind);

struct NextTokenComparison {
  bool same_argmax = false;
  double kl = 0;  // KL(softmax(reference) || softmax(test)), nats
};
// INVALID_ARGUMENT on empty, mismatched or non-finite logits.
absl::StatusOr<NextTokenComparison> CompareNextToken(absl::Span<const float> reference,
                                                     absl::Span<const float> test);

// Index of the largest logit (the lowest on ties). REQUIRES: not empty.
int Argmax(absl::Span<const float> logits);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_FIDELITY_METRICS_H_
