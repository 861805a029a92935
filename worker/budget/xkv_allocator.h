// XKV per-layer budgets (ALGORITHMS.md §5) from an importance profile.
//
// R_l(b) is the share of layer l's SnapKV importance kept by its top b
// tokens (per head). Two modes:
//   (a) Allocate:             maximise sum_l R_l(b_l)  s.t. sum_l b_l = N;
//   (b) AllocateForRetention: minimise sum_l b_l  s.t. sum_l R_l(b_l) >= L*R.
// Both run the unit-step greedy of the reference (next unit to the layer with
// the largest normalised increment). Because every R_l is concave (the
// profile's increments are sorted, and the profile reader rejects anything
// else), the objective is separable concave and the greedy is exactly
// optimal: an exchange argument shows any allocation can be turned into the
// greedy one without lowering sum R. worker_alloc_test checks it against
// brute force.
//
// Multiple profile samples: like the reference, each sample is solved on its
// own and the allocations are averaged — mode (a) rounds the mean by largest
// remainder so the total stays exact; mode (b) rounds each layer half-up.
// [interp] Budget beyond every layer's profiled length carries no
// information; it is spread evenly (lowest layers first) so the total is
// still exact.
//
// Thread-safety: immutable after Create; all methods are const.
#ifndef KVTIER_WORKER_BUDGET_XKV_ALLOCATOR_H_
#define KVTIER_WORKER_BUDGET_XKV_ALLOCATOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/budget/allocator.h"
#include "worker/budget/profile.h"

namespace kvtier {

struct XkvOptions {
  // Tokens per budget unit. 1 (default) allocates tokens; the page size
  // allocates pages: each unit's increment is the sum of its tokens'
  // increments, which keeps R_l concave. >= 1.
  int64_t tokens_per_unit = 1;
  // Units every layer gets before the greedy starts. Default 0, as in the
  // reference; raise it to keep sinks and windows resident. >= 0.
  int64_t min_per_layer = 0;
};

absl::Status ValidateXkvOptions(const XkvOptions& options);

class XkvAllocator final : public BudgetAllocator {
 public:
  // INVALID_ARGUMENT for a profile that fails ValidateXkvProfile (including
  // non-concave curves) or bad options.
  static absl::StatusOr<XkvAllocator> Create(const XkvProfile& profile,
                                             XkvOptions options = {});

  std::string_view name() const override { return "xkv"; }
  BudgetGranularity granularity() const override {
    return BudgetGranularity::kPerLayer;
  }
  // Mode (a). REQUIRES: request.n_layers equals the profile's layers and
  // request.total >= n_layers * min_per_layer (else INVALID_ARGUMENT).
  absl::StatusOr<BudgetAllocation> Allocate(
      const BudgetRequest& request) const override;
  // Mode (b); target_avg in (0, 1].
  absl::StatusOr<BudgetAllocation> AllocateForRetention(
      double target_avg, int32_t n_kv_heads) const;

  // R_l(units) of one profile sample; units beyond the curve give 1.
  double Retention(size_t sample, int32_t layer, int64_t units) const;
  int32_t n_layers() const { return static_cast<int32_t>(gains_[0].size()); }

 private:
  XkvAllocator(std::vector<std::vector<std::vector<double>>> gains,
               XkvOptions options)
      : gains_(std::move(gains)), options_(options) {}

  std::vector<int64_t> MaxRetention(size_t sample, int64_t total) const;
  std::vector<int64_t> ReachRetention(size_t sample, double target_sum) const;

  // [sample][layer][unit]: normalised gain of the layer's unit-th unit; each
  // layer's gains sum to 1 and are non-increasing.
  std::vector<std::vector<std::vector<double>>> gains_;
  XkvOptions options_;
};

}  // namespace kvtier

#endif  // KVTIER_WORKER_BUDGET_XKV_ALLOCATOR_H_
