#include "worker/budget/xkv_allocator.h"

#include <cmath>
#include <queue>
#include <tuple>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier {
namespace {

// Max-heap entry: (gain, layer); larger gain first, lower layer on ties so
// results are deterministic.
struct Candidate {
  double gain;
  int32_t layer;
  bool operator<(const Candidate& o) const {
    return gain < o.gain || (gain == o.gain && layer > o.layer);
  }
};

double GainAt(const std::vector<double>& gains, int64_t unit) {
  return unit < static_cast<int64_t>(gains.size()) ? gains[unit] : 0.0;
}

}  // namespace

absl::Status ValidateXkvOptions(const XkvOptions& o) {
  if (o.tokens_per_unit < 1) {
    return absl::InvalidArgumentError("XKV tokens_per_unit must be >= 1");
  }
  if (o.min_per_layer < 0) {
    return absl::InvalidArgumentError("XKV min_per_layer must be >= 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<XkvAllocator> XkvAllocator::Create(const XkvProfile& profile,
                                                  XkvOptions options) {
  RETURN_IF_ERROR(ValidateXkvOptions(options));
  RETURN_IF_ERROR(ValidateXkvProfile(profile));
  std::vector<std::vector<std::vector<double>>> gains(profile.samples.size());
  for (size_t s = 0; s < profile.samples.size(); ++s) {
    for (const std::vector<double>& inc : profile.samples[s]) {
      double total = 0;
      for (double v : inc) total += v;
      const int64_t per = options.tokens_per_unit;
      std::vector<double> g((inc.size() + per - 1) / per, 0.0);
      for (size_t i = 0; i < inc.size(); ++i) g[i / per] += inc[i] / total;
      gains[s].push_back(std::move(g));
    }
  }
  return XkvAllocator(std::move(gains), options);
}

double XkvAllocator::Retention(size_t sample, int32_t layer,
                               int64_t units) const {
  const std::vector<double>& g = gains_[sample][layer];
  if (units >= static_cast<int64_t>(g.size())) return 1.0;
  double r = 0;
  for (int64_t i = 0; i < units; ++i) r += g[i];
  return r;
}

std::vector<int64_t> XkvAllocator::MaxRetention(size_t sample,
                                                int64_t total) const {
  const auto& gains = gains_[sample];
  const int32_t n = static_cast<int32_t>(gains.size());
  std::vector<int64_t> b(n, options_.min_per_layer);
  int64_t left = total - int64_t{n} * options_.min_per_layer;
  std::priority_queue<Candidate> heap;
  for (int32_t l = 0; l < n; ++l) {
    const double g = GainAt(gains[l], b[l]);
    if (g > 0) heap.push({g, l});
  }
  while (left > 0 && !heap.empty()) {
    const int32_t l = heap.top().layer;
    heap.pop();
    ++b[l];
    --left;
    const double g = GainAt(gains[l], b[l]);
    if (g > 0) heap.push({g, l});
  }
  // Every layer is at full retention: the surplus changes nothing, spread it.
  for (int32_t l = 0; l < n; ++l) b[l] += left / n + (l < left % n ? 1 : 0);
  return b;
}

std::vector<int64_t> XkvAllocator::ReachRetention(size_t sample,
                                                  double target_sum) const {
  const auto& gains = gains_[sample];
  const int32_t n = static_cast<int32_t>(gains.size());
  std::vector<int64_t> b(n, options_.min_per_layer);
  double reached = 0;
  std::priority_queue<Candidate> heap;
  for (int32_t l = 0; l < n; ++l) {
    reached += Retention(sample, l, b[l]);
    const double g = GainAt(gains[l], b[l]);
    if (g > 0) heap.push({g, l});
  }
  // The slack absorbs rounding in the running sum, so a target of exactly
  // 1.0 ends at full retention instead of failing by 1e-16.
  const double slack = 1e-9 * n;
  while (reached < target_sum - slack && !heap.empty()) {
    const auto [g, l] = heap.top();
    heap.pop();
    ++b[l];
    reached += g;
    const double next = GainAt(gains[l], b[l]);
    if (next > 0) heap.push({next, l});
  }
  return b;
}

absl::StatusOr<BudgetAllocation> XkvAllocator::Allocate(
    const BudgetRequest& request) const {
  RETURN_IF_ERROR(ValidateBudgetRequest(request));
  if (request.n_layers != n_layers()) {
    return absl::InvalidArgumentError(
        absl::StrCat("XKV profile has ", n_layers(), " layers, request has ",
                     request.n_layers));
  }
  if (request.total < int64_t{request.n_layers} * options_.min_per_layer) {
    return absl::InvalidArgumentError(absl::StrCat(
        "XKV total ", request.total, " is below n_layers * min_per_layer = ",
        int64_t{request.n_layers} * options_.min_per_layer));
  }
  BudgetAllocation out;
  out.granularity = BudgetGranularity::kPerLayer;
  out.n_layers = request.n_layers;
  out.n_kv_heads = request.n_kv_heads;
  if (gains_.size() == 1) {
    out.budgets = MaxRetention(0, request.total);
    return out;
  }
  std::vector<double> mean(n_layers(), 0.0);
  for (size_t s = 0; s < gains_.size(); ++s) {
    const std::vector<int64_t> b = MaxRetention(s, request.total);
    for (int32_t l = 0; l < n_layers(); ++l) {
      mean[l] += static_cast<double>(b[l]) / gains_.size();
    }
  }
  ASSIGN_OR_RETURN(out.budgets, RoundLargestRemainder(mean, request.total,
                                                      options_.min_per_layer));
  return out;
}

absl::StatusOr<BudgetAllocation> XkvAllocator::AllocateForRetention(
    double target_avg, int32_t n_kv_heads) const {
  if (!(target_avg > 0 && target_avg <= 1)) {
    return absl::InvalidArgumentError(
        absl::StrCat("XKV target retention ", target_avg, " not in (0, 1]"));
  }
  if (n_kv_heads <= 0) {
    return absl::InvalidArgumentError("XKV n_kv_heads must be > 0");
  }
  BudgetAllocation out;
  out.granularity = BudgetGranularity::kPerLayer;
  out.n_layers = n_layers();
  out.n_kv_heads = n_kv_heads;
  const double target_sum = target_avg * n_layers();
  std::vector<double> mean(n_layers(), 0.0);
  for (size_t s = 0; s < gains_.size(); ++s) {
    const std::vector<int64_t> b = ReachRetention(s, target_sum);
    for (int32_t l = 0; l < n_layers(); ++l) {
      mean[l] += static_cast<double>(b[l]) / gains_.size();
    }
  }
  out.budgets.resize(n_layers());
  for (int32_t l = 0; l < n_layers(); ++l) {
    out.budgets[l] = static_cast<int64_t>(std::floor(mean[l] + 0.5));
  }
  return out;
}

}  // namespace kvtier
