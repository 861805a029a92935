#include "worker/eval/fidelity_metrics.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/estimate.h"

namespace kvtier::eval {

absl::Status AttentionGeometry::Validate() const {
  if (n_q_heads == 0 || n_kv_heads == 0 || head_dim == 0 || page_size == 0 ||
      n_q_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention geometry: n_q_heads=", n_q_heads, " n_kv_heads=", n_kv_heads,
        " head_dim=", head_dim, " page_size=", page_size,
        " (all positive, n_kv_heads divides n_q_heads)"));
  }
  return absl::OkStatus();
}

namespace {

absl::StatusOr<uint32_t> CheckInputs(const AttentionGeometry& g, absl::Span<const float> keys,
                                     absl::Span<const float> q) {
  RETURN_IF_ERROR(g.Validate());
  const size_t kv = size_t{g.n_kv_heads} * g.head_dim;
  if (keys.empty() || keys.size() % kv != 0 || q.size() != size_t{g.n_q_heads} * g.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat("keys (", keys.size(),
                                                   " floats) must be whole tokens of ", kv,
                                                   " and q must hold ", g.n_q_heads * g.head_dim));
  }
  return static_cast<uint32_t>(keys.size() / kv);
}

}  // namespace

absl::StatusOr<PageAttention> ExactPageAttention(const AttentionGeometry& g,
                                                 absl::Span<const float> keys,
                                                 absl::Span<const float> q) {
  uint32_t n;
  ASSIGN_OR_RETURN(n, CheckInputs(g, keys, q));
  PageAttention out;
  out.full_pages = n / g.page_size;
  out.max_prob.assign(out.full_pages, 0.0);
  out.mass.assign(out.full_pages, 0.0);
  out.head_max_prob.assign(size_t{g.n_q_heads} * out.full_pages, 0.0);
  out.head_mass.assign(size_t{g.n_q_heads} * out.full_pages, 0.0);
  const uint32_t group = g.n_q_heads / g.n_kv_heads;
  const double scale = 1.0 / std::sqrt(static_cast<double>(g.head_dim));
  std::vector<double> s(n);
  for (uint32_t h = 0; h < g.n_q_heads; ++h) {
    const float* qh = q.data() + size_t{h} * g.head_dim;
    const uint32_t kvh = h / group;
    double mx = -INFINITY;
    for (uint32_t t = 0; t < n; ++t) {
      const float* k = keys.data() + (size_t{t} * g.n_kv_heads + kvh) * g.head_dim;
      double dot = 0;
      for (uint32_t c = 0; c < g.head_dim; ++c) dot += double{qh[c]} * k[c];
      s[t] = dot * scale;
      mx = std::max(mx, s[t]);
    }
    double sum = 0;
    for (uint32_t t = 0; t < n; ++t) sum += (s[t] = std::exp(s[t] - mx));
    for (uint32_t page = 0; page < out.full_pages; ++page) {
      double page_max = 0, page_mass = 0;
      for (uint32_t t = page * g.page_size; t < (page + 1) * g.page_size; ++t) {
        const double p = s[t] / sum;
        page_max = std::max(page_max, p);
        page_mass += p;
      }
      out.mass[page] += page_mass / g.n_q_heads;
      out.max_prob[page] += page_max / g.n_q_heads;
      out.head_mass[size_t{h} * out.full_pages + page] = page_mass;
      out.head_max_prob[size_t{h} * out.full_pages + page] = page_max;
    }
  }
  return out;
}

absl::StatusOr<std::vector<float>> DigestPageRows(const AttentionGeometry& g,
                                                  kernels::DigestKind kind,
                                                  absl::Span<const float> keys,
                                                  absl::Span<const float> q,
                                                  Selection selection) {
  uint32_t n;
  ASSIGN_OR_RETURN(n, CheckInputs(g, keys, q));
  const uint32_t pages = n / g.page_size;
  if (pages == 0) return std::vector<float>();
  std::vector<int32_t> ids(pages);
  std::iota(ids.begin(), ids.end(), 0);
  std::vector<float> digests(size_t{pages} *
                             kernels::DigestSlotElements(kind, g.n_kv_heads, g.head_dim));
  kernels::DigestArgs d;
  d.pool = keys.data();
  d.page_stride_bytes = size_t{g.page_size} * g.n_kv_heads * g.head_dim * sizeof(float);
  d.pool_pages = pages;
  d.key_type = kernels::ScalarType::kF32;
  d.page_size = g.page_size;
  d.n_kv_heads = g.n_kv_heads;
  d.head_dim = g.head_dim;
  d.page_ids = ids.data();
  d.n_pages = pages;
  d.kind = kind;
  d.digests = digests.data();
  d.digest_type = kernels::ScalarType::kF32;
  d.digest_slots = ids.data();
  d.digest_capacity = pages;
  RETURN_IF_ERROR(kernels::ComputeDigestsCpu(d, nullptr));

  const int32_t indptr[2] = {0, static_cast<int32_t>(pages)};
  const bool per_query_head = selection == Selection::kPerQueryHead;
  const uint32_t n_rows = per_query_head ? g.n_q_heads : g.n_kv_heads;
  std::vector<float> rows(size_t{pages} * n_rows);
  kernels::EstimateArgs e;
  e.queries = q.data();
  e.query_type = kernels::ScalarType::kF32;
  e.batch = 1;
  e.n_q_heads = g.n_q_heads;
  e.n_kv_heads = g.n_kv_heads;
  e.head_dim = g.head_dim;
  e.digests = digests.data();
  e.digest_type = kernels::ScalarType::kF32;
  e.kind = kind;
  e.digest_capacity = pages;
  e.page_indptr = indptr;
  e.digest_slots = ids.data();
  e.total_pages = pages;
  e.reduce = per_query_head ? kernels::HeadReduce::kPerQueryHead : kernels::HeadReduce::kGroupSum;
  e.scores = rows.data();
  RETURN_IF_ERROR(kernels::EstimateScoresCpu(e, nullptr));
  if (selection != Selection::kShared) return rows;
  std::vector<float> scores(pages, 0.0f);
  for (uint32_t r = 0; r < g.n_kv_heads; ++r) {
    for (uint32_t p = 0; p < pages; ++p) scores[p] += rows[size_t{r} * pages + p];
  }
  return scores;
}

template <typename T>
std::vector<uint32_t> TopK(absl::Span<const T> scores, uint32_t k) {
  std::vector<uint32_t> idx(scores.size());
  std::iota(idx.begin(), idx.end(), 0u);
  k = std::min<uint32_t>(k, idx.size());
  std::partial_sort(idx.begin(), idx.begin() + k, idx.end(), [&](uint32_t a, uint32_t b) {
    return scores[a] > scores[b] || (scores[a] == scores[b] && a < b);
  });
  idx.resize(k);
  return idx;
}
template std::vector<uint32_t> TopK<float>(absl::Span<const float>, uint32_t);
template std::vector<uint32_t> TopK<double>(absl::Span<const double>, uint32_t);

namespace {

// Adds recall@k and mass@k of ranking `scores` against `truth` and `mass`
// (one entry per page) to `out`, weighted by `weight`; -1 where the pages
// do not exceed k.
void AddQuality(absl::Span<const double> truth, absl::Span<const double> mass,
                absl::Span<const float> scores, absl::Span<const uint32_t> ks, double weight,
                EstimatorQuality* out) {
  for (size_t j = 0; j < ks.size(); ++j) {
    const uint32_t k = ks[j];
    if (truth.size() <= k) {
      out->recall[j] = out->mass[j] = -1;
      continue;
    }
    const std::vector<uint32_t> est = TopK(scores, k);
    std::vector<uint32_t> best = TopK(truth, k);
    std::sort(best.begin(), best.end());
    uint32_t hits = 0;
    double held = 0;
    for (uint32_t p : est) {
      hits += std::binary_search(best.begin(), best.end(), p) ? 1 : 0;
      held += mass[p];
    }
    out->recall[j] += weight * hits / k;
    out->mass[j] += weight * held;
  }
}

absl::Status CheckKs(absl::Span<const uint32_t> ks) {
  for (uint32_t k : ks) {
    if (k == 0) return absl::InvalidArgumentError("k must be positive");
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<EstimatorQuality> EvaluateEstimator(const PageAttention& exact,
                                                   absl::Span<const float> scores,
                                                   absl::Span<const uint32_t> ks) {
  if (scores.size() != exact.full_pages || exact.max_prob.size() != exact.full_pages ||
      exact.mass.size() != exact.full_pages) {
    return absl::InvalidArgumentError(absl::StrCat("estimator scores cover ", scores.size(),
                                                   " pages, the attention ", exact.full_pages));
  }
  RETURN_IF_ERROR(CheckKs(ks));
  EstimatorQuality out{std::vector<double>(ks.size()), std::vector<double>(ks.size())};
  AddQuality(exact.max_prob, exact.mass, scores, ks, 1.0, &out);
  return out;
}

absl::StatusOr<EstimatorQuality> EvaluateSelection(const AttentionGeometry& g,
                                                   const PageAttention& exact,
                                                   absl::Span<const float> rows,
                                                   Selection selection,
                                                   absl::Span<const uint32_t> ks) {
  RETURN_IF_ERROR(g.Validate());
  if (selection == Selection::kShared) return EvaluateEstimator(exact, rows, ks);
  const size_t n = exact.full_pages;
  const uint32_t n_rows = selection == Selection::kPerQueryHead ? g.n_q_heads : g.n_kv_heads;
  const uint32_t heads_per_row = g.n_q_heads / n_rows;
  if (rows.size() != n * n_rows || exact.head_max_prob.size() != n * g.n_q_heads ||
      exact.head_mass.size() != n * g.n_q_heads) {
    return absl::InvalidArgumentError(absl::StrCat(
        "per-head scores (", rows.size(), ") and attention (", exact.head_max_prob.size(),
        ") must cover ", n, " pages for ", n_rows, " rankings and ", g.n_q_heads, " heads"));
  }
  RETURN_IF_ERROR(CheckKs(ks));
  EstimatorQuality out{std::vector<double>(ks.size()), std::vector<double>(ks.size())};
  std::vector<double> truth(n), mass(n);
  for (uint32_t r = 0; r < n_rows; ++r) {
    std::fill(truth.begin(), truth.end(), 0.0);
    std::fill(mass.begin(), mass.end(), 0.0);
    for (uint32_t h = r * heads_per_row; h < (r + 1) * heads_per_row; ++h) {
      for (size_t p = 0; p < n; ++p) {
        truth[p] += exact.head_max_prob[h * n + p] / heads_per_row;
        mass[p] += exact.head_mass[h * n + p] / heads_per_row;
      }
    }
    AddQuality(truth, mass, rows.subspan(r * n, n), ks, 1.0 / n_rows, &out);
  }
  return out;
}

std::string SelectionName(Selection s) {
  switch (s) {
    case Selection::kShared:
      return "shared";
    case Selection::kPerKvHead:
      return "kv_head";
    case Selection::kPerQueryHead:
      return "q_head";
  }
  return "unknown";
}

std::string DigestKindName(kernels::DigestKind kind) {
  switch (kind) {
    case kernels::DigestKind::kMinMax:
      return "minmax";
    case kernels::DigestKind::kArkvaleMean:
      return "arkvale";
    case kernels::DigestKind::kCentroid:
      return "centroid";
  }
  return "unknown";
}

int Argmax(absl::Span<const float> logits) {
  return static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
}

absl::StatusOr<NextTokenComparison> CompareNextToken(absl::Span<const float> reference,
                                                     absl::Span<const float> test) {
  if (reference.empty() || reference.size() != test.size()) {
    return absl::InvalidArgumentError(absl::StrCat("logits of ", reference.size(), " and ",
                                                   test.size(), " entries cannot be compared"));
  }
  for (size_t i = 0; i < reference.size(); ++i) {
    if (!std::isfinite(reference[i]) || !std::isfinite(test[i])) {
      return absl::InvalidArgumentError(absl::StrCat("non-finite logit at ", i));
    }
  }
  auto log_softmax = [](absl::Span<const float> x) {
    const double mx = *std::max_element(x.begin(), x.end());
    double sum = 0;
    for (float v : x) sum += std::exp(v - mx);
    std::vector<double> out(x.size());
    const double lse = mx + std::log(sum);
    for (size_t i = 0; i < x.size(); ++i) out[i] = x[i] - lse;
    return out;
  };
  const std::vector<double> lp = log_softmax(reference), lq = log_softmax(test);
  NextTokenComparison c;
  for (size_t i = 0; i < lp.size(); ++i) c.kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  c.kl = std::max(c.kl, 0.0);  // rounding can leave a tiny negative
  c.same_argmax = Argmax(reference) == Argmax(test);
  return c;
}

}  // namespace kvtier::eval
