#include "worker/budget/allocator.h"

#include <cmath>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier {

absl::Status ValidateBudgetRequest(const BudgetRequest& r) {
  if (r.n_layers <= 0 || r.n_kv_heads <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "budget request needs n_layers > 0 and n_kv_heads > 0, got ",
        r.n_layers, " and ", r.n_kv_heads));
  }
  if (r.n_layers > kMaxBudgetLayers || r.n_kv_heads > kMaxBudgetKvHeads) {
    return absl::InvalidArgumentError(
        absl::StrCat("budget request shape ", r.n_layers, "x", r.n_kv_heads,
                     " exceeds ", kMaxBudgetLayers, "x", kMaxBudgetKvHeads));
  }
  if (r.total <= 0 || r.total > kMaxBudgetTotal) {
    return absl::InvalidArgumentError(absl::StrCat(
        "budget request total must be in [1, 2^56], got ", r.total));
  }
  if (r.context < 0 || r.context > kMaxBudgetContext) {
    return absl::InvalidArgumentError(absl::StrCat(
        "budget request context must be in [0, 2^32], got ", r.context));
  }
  return absl::OkStatus();
}

int64_t BudgetAllocation::Total() const {
  int64_t sum = 0;
  for (int64_t b : budgets) sum += b;
  return sum;
}

int64_t BudgetAllocation::LayerBudget(int32_t layer) const {
  if (granularity == BudgetGranularity::kPerLayer) return budgets[layer];
  int64_t sum = 0;
  for (int32_t h = 0; h < n_kv_heads; ++h) {
    sum += budgets[static_cast<size_t>(layer) * n_kv_heads + h];
  }
  return sum;
}

int64_t BudgetAllocation::HeadBudget(int32_t layer, int32_t head) const {
  if (granularity == BudgetGranularity::kPerLayer) return budgets[layer];
  return budgets[static_cast<size_t>(layer) * n_kv_heads + head];
}

absl::StatusOr<BudgetAllocation> UniformAllocator::Allocate(
    const BudgetRequest& request) const {
  RETURN_IF_ERROR(ValidateBudgetRequest(request));
  BudgetAllocation out;
  out.granularity = granularity_;
  out.n_layers = request.n_layers;
  out.n_kv_heads = request.n_kv_heads;
  const int64_t n = granularity_ == BudgetGranularity::kPerLayer
                        ? request.n_layers
                        : int64_t{request.n_layers} * request.n_kv_heads;
  out.budgets.assign(n, request.total / n);
  for (int64_t i = 0; i < request.total % n; ++i) ++out.budgets[i];
  return out;
}

absl::StatusOr<std::vector<int64_t>> RoundLargestRemainder(
    absl::Span<const double> ideal, int64_t total, int64_t min_each,
    int64_t max_each) {
  const int64_t n = static_cast<int64_t>(ideal.size());
  if (n == 0 || min_each < 0 || (max_each >= 0 && max_each < min_each)) {
    return absl::InvalidArgumentError("rounding needs shares and min <= max");
  }
  if (total < n * min_each || (max_each >= 0 && total > n * max_each)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot split ", total, " into ", n, " shares within [", min_each, ", ",
        max_each < 0 ? std::string("inf") : absl::StrCat(max_each), "]"));
  }
  std::vector<int64_t> out(n);
  std::vector<double> remainder(n);
  int64_t sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(ideal[i]) || ideal[i] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("share ", i, " is negative or not finite"));
    }
    double f = std::floor(ideal[i]);
    if (f < min_each) f = static_cast<double>(min_each);
    if (max_each >= 0 && f > max_each) f = static_cast<double>(max_each);
    out[i] = static_cast<int64_t>(f);
    remainder[i] = ideal[i] - f;
    sum += out[i];
  }
  // Largest remainder first, lowest index on ties.
  using Entry = std::pair<double, int64_t>;
  auto by_largest = [](const Entry& a, const Entry& b) {
    return a.first < b.first || (a.first == b.first && a.second > b.second);
  };
  auto by_smallest = [](const Entry& a, const Entry& b) {
    return a.first > b.first || (a.first == b.first && a.second > b.second);
  };
  if (sum < total) {
    std::priority_queue<Entry, std::vector<Entry>, decltype(by_largest)> q(
        by_largest);
    for (int64_t i = 0; i < n; ++i) q.push({remainder[i], i});
    while (sum < total) {
      auto [rem, i] = q.top();
      q.pop();
      if (max_each >= 0 && out[i] >= max_each) continue;
      ++out[i];
      ++sum;
      q.push({rem - 1, i});
    }
  } else if (sum > total) {
    std::priority_queue<Entry, std::vector<Entry>, decltype(by_smallest)> q(
        by_smallest);
    for (int64_t i = 0; i < n; ++i) q.push({remainder[i], i});
    while (sum > total) {
      auto [rem, i] = q.top();
      q.pop();
      if (out[i] <= min_each) continue;
      --out[i];
      --sum;
      q.push({rem + 1, i});
    }
  }
  return out;
}

}  // namespace kvtier
