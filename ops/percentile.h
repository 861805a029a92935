// The q-quantile of latency samples, as the ops tools report it: the
// sample at index min(n - 1, floor(q * n)) in sorted order; 0 for none.
#ifndef KVTIER_OPS_PERCENTILE_H_
#define KVTIER_OPS_PERCENTILE_H_

#include <algorithm>
#include <cstddef>
#include <vector>

namespace kvtier::ops {

inline double Percentile(std::vector<double> v, double q) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(q * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

}  // namespace kvtier::ops

#endif  // KVTIER_OPS_PERCENTILE_H_
