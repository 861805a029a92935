#include "kernels/topk.h"

#include <algorithm>
#include <functional>
#include <vector>

#include "kernels/cpu/internal.h"

namespace kvtier::kernels {
namespace {

constexpr char kWhat[] = "SelectTopK";

// Maps a score to an unsigned key whose order is the float order, with NaN
// below -inf and -0 equal to +0.
inline uint32_t OrderKey(float s) {
  uint32_t u = FloatBits(s);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0;  // NaN
  if (u == 0x80000000u) u = 0;                    // -0 -> +0
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// Larger is better: score key first, then the lower position.
inline uint64_t Rank(float s, uint32_t pos) {
  return (uint64_t{OrderKey(s)} << 32) | (0xffffffffu - pos);
}

// Selects one row of `n` scores into `sel` (k entries, ascending, -1 tail).
// Returns the count.
int32_t SelectRow(const float* scores, uint32_t n, const TopKArgs& a, std::vector<uint64_t>& cand,
                  int32_t* sel) {
  std::fill_n(sel, a.k, -1);
  if (n <= a.k) {
    for (uint32_t i = 0; i < n; ++i) sel[i] = static_cast<int32_t>(i);
    return static_cast<int32_t>(n);
  }
  // n > k >= sink + recent: the forced ranges are disjoint and leave
  // n - sink - recent > k_eff candidates.
  const uint32_t k_eff = a.k - a.sink - a.recent;
  const uint32_t lo = a.sink;
  const uint32_t hi = n - a.recent;
  int32_t count = 0;
  for (uint32_t i = 0; i < lo; ++i) sel[count++] = static_cast<int32_t>(i);
  if (k_eff > 0) {
    cand.resize(hi - lo);
    for (uint32_t i = lo; i < hi; ++i) cand[i - lo] = Rank(scores[i], i);
    std::nth_element(cand.begin(), cand.begin() + (k_eff - 1), cand.end(),
                     std::greater<uint64_t>());
    int32_t* mid = sel + count;
    for (uint32_t j = 0; j < k_eff; ++j) {
      mid[j] = static_cast<int32_t>(0xffffffffu - static_cast<uint32_t>(cand[j]));
    }
    std::sort(mid, mid + k_eff);
    count += static_cast<int32_t>(k_eff);
  }
  for (uint32_t i = hi; i < n; ++i) sel[count++] = static_cast<int32_t>(i);
  return count;
}

}  // namespace

absl::Status TopKArgs::Validate() const {
  using internal::CheckNotNull;
  using internal::CheckRange;
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "n_rows", n_rows, 1, 1u << 16));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "k", k, 1, INT32_MAX));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "sink", sink, 0, k));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "recent", recent, 0, k - sink));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "total_pages", total_pages, 0, INT32_MAX));
  if (batch == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "page_indptr", page_indptr));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "selected", selected));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "counts", counts));
  if (total_pages == 0) return absl::OkStatus();
  return CheckNotNull(kWhat, "scores", scores);
}

absl::Status SelectTopKCpu(const TopKArgs& a, ThreadPool* pool) {
  KVTIER_KERNELS_RETURN_IF_ERROR(a.Validate());
  if (a.batch == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(
      internal::CheckIndptr(kWhat, "page_indptr", a.page_indptr, a.batch, a.total_pages));
  const uint32_t out_rows = a.out_rows();
  ParallelFor(pool, size_t{a.batch} * out_rows, [&](size_t item) {
    const size_t b = item / out_rows;
    const size_t r = item % out_rows;
    const size_t first = a.page_indptr[b];
    const uint32_t n = static_cast<uint32_t>(a.page_indptr[b + 1] - first);
    const float* block = a.scores + first * a.n_rows;
    std::vector<uint64_t> cand;
    std::vector<float> summed;
    const float* row = block + r * n;
    if (a.sum_rows && n > a.k) {
      summed.assign(block, block + n);
      for (uint32_t h = 1; h < a.n_rows; ++h) {
        const float* src = block + size_t{h} * n;
        for (uint32_t i = 0; i < n; ++i) summed[i] += src[i];
      }
      row = summed.data();
    }
    a.counts[item] = SelectRow(row, n, a, cand, a.selected + item * a.k);
  });
  return absl::OkStatus();
}

}  // namespace kvtier::kernels
