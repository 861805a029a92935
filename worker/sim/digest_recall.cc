#include "worker/sim/digest_recall.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/status_macros.h"
#include "kernels/estimate.h"

namespace kvtier::worker {
namespace {

// The k best indices of `v` (ties to the lower index).
std::vector<uint32_t> TopIndices(const std::vector<double>& v, uint32_t k) {
  std::vector<uint32_t> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::stable_sort(idx.begin(), idx.end(), [&](uint32_t a, uint32_t b) { return v[a] > v[b]; });
  idx.resize(std::min<size_t>(k, idx.size()));
  std::sort(idx.begin(), idx.end());
  return idx;
}

}  // namespace

absl::StatusOr<std::vector<double>> DigestRecallAtK(const KvCacheManager& cache, uint64_t seq_id,
                                                    uint32_t layer, const float* q,
                                                    const float* lse,
                                                    absl::Span<const uint32_t> ks) {
  const KvCacheOptions& o = cache.options();
  const uint32_t hq = o.n_q_heads, hkv = o.layout.n_kv_heads, d = o.layout.head_dim;
  const uint32_t p = o.layout.page_size;
  ASSIGN_OR_RETURN(LayerView view, cache.View(seq_id, layer));
  const uint32_t n = view.n_digested;
  std::vector<double> recall(ks.size(), -1.0);
  if (n == 0) return recall;
  std::vector<float> keys, values;
  RETURN_IF_ERROR(cache.ReadTokens(seq_id, layer, &keys, &values));
  if (keys.size() < size_t{n} * p * hkv * d) {
    return absl::FailedPreconditionError("digest recall needs a full cache");
  }
  // True importance: mean over heads of the page's largest probability.
  std::vector<double> truth(n, 0.0);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  for (uint32_t h = 0; h < hq; ++h) {
    const float* qh = q + size_t{h} * d;
    for (uint32_t page = 0; page < n; ++page) {
      double best = 0;
      for (uint32_t t = page * p; t < (page + 1) * p; ++t) {
        const float* kt = keys.data() + (size_t{t} * hkv + h / (hq / hkv)) * d;
        float dot = 0;
        for (uint32_t c = 0; c < d; ++c) dot += qh[c] * kt[c];
        best = std::max(best, std::exp(double(scale * dot) - lse[h]));
      }
      truth[page] += best / hq;
    }
  }
  // Estimated importance, as the policies compute it.
  ASSIGN_OR_RETURN(const void* digests, cache.Digests(seq_id, layer));
  const int32_t indptr[2] = {0, static_cast<int32_t>(n)};
  std::vector<int32_t> slots(n);
  std::iota(slots.begin(), slots.end(), 0);
  std::vector<float> rows(size_t{n} * hkv);
  kernels::EstimateArgs args;
  args.queries = q;
  args.query_type = kernels::ScalarType::kF32;
  args.batch = 1;
  args.n_q_heads = hq;
  args.n_kv_heads = hkv;
  args.head_dim = d;
  args.digests = digests;
  args.digest_type = cache.digest_type();
  args.kind = cache.policy()->digest_kind();
  args.digest_capacity = n;
  args.page_indptr = indptr;
  args.digest_slots = slots.data();
  args.total_pages = n;
  args.reduce = kernels::HeadReduce::kGroupSum;
  args.scores = rows.data();
  RETURN_IF_ERROR(kernels::EstimateScoresCpu(args, nullptr));
  std::vector<double> estimate(n, 0.0);
  for (uint32_t r = 0; r < hkv; ++r) {
    for (uint32_t i = 0; i < n; ++i) estimate[i] += rows[size_t{r} * n + i];
  }
  for (size_t i = 0; i < ks.size(); ++i) {
    if (ks[i] == 0 || ks[i] >= n) continue;
    const std::vector<uint32_t> want = TopIndices(truth, ks[i]);
    const std::vector<uint32_t> got = TopIndices(estimate, ks[i]);
    std::vector<uint32_t> both;
    std::set_intersection(want.begin(), want.end(), got.begin(), got.end(),
                          std::back_inserter(both));
    recall[i] = static_cast<double>(both.size()) / ks[i];
  }
  return recall;
}

}  // namespace kvtier::worker
