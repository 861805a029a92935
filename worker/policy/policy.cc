#include "worker/policy/policy.h"

#include "kernels/topk.h"

namespace kvtier::worker {

std::vector<int32_t> AllPages(uint32_t n) {
  std::vector<int32_t> pages(n);
  for (uint32_t i = 0; i < n; ++i) pages[i] = static_cast<int32_t>(i);
  return pages;
}

std::vector<int32_t> ResidentPages(const LayerView& view) {
  std::vector<int32_t> pages;
  for (uint32_t i = 0; i < view.n_pages; ++i) {
    if (HoldsSlot(view.states[i])) pages.push_back(static_cast<int32_t>(i));
  }
  return pages;
}

absl::StatusOr<std::vector<int32_t>> TopKPages(absl::Span<const float> scores, uint32_t k,
                                               uint32_t sink, uint32_t recent) {
  const uint32_t n = static_cast<uint32_t>(scores.size());
  if (n == 0 || k == 0) return std::vector<int32_t>{};
  const int32_t indptr[2] = {0, static_cast<int32_t>(n)};
  std::vector<int32_t> selected(k, -1);
  int32_t count = 0;
  kernels::TopKArgs args;
  args.scores = scores.data();
  args.page_indptr = indptr;
  args.batch = 1;
  args.total_pages = n;
  args.n_rows = 1;
  args.k = k;
  args.sink = sink;
  args.recent = recent;
  args.selected = selected.data();
  args.counts = &count;
  if (absl::Status s = kernels::SelectTopKCpu(args, nullptr); !s.ok()) return s;
  selected.resize(count);
  return selected;
}

}  // namespace kvtier::worker
