// LU-KV per-(layer, KV head) budgets from long-horizon marginal utility
// (ALGORITHMS.md §6).
//
// Offline (BuildLukvTable): each unit's cumulative eviction-loss curve C_u(m)
// (profile.h) is capped by the per-head floor and replaced by its lower
// convex envelope, so marginal costs never decrease. A global min-heap then
// evicts from the unit whose next envelope segment is cheapest; because the
// relaxed problem  min sum_u env_u(m_u) s.t. sum_u m_u = K  is separable
// convex, this greedy is its exact optimum for every K (and the optimum of
// the original problem whenever the curves are already convex). Every
// unit's prune ratio is recorded when p% (p = 1..99) of all tokens are
// evicted; tables from several samples are averaged.
//
// Online (LukvAllocator): for compression ratio r read row round(100 r) - 1,
// keep (1 - prune) * length tokens per unit, rounded by largest remainder to
// the total, at least 1 and at most the context.
//
// [interp] choices, each configurable or documented in ALLOCATORS.md:
//  - global level p means p% of all tokens of all units (sum of lengths);
//    levels past what the floors allow record the saturated state;
//  - a head's floor is max(ceil(floor_fraction * length), protected, 1);
//  - envelope ties (equal slope) go to the lowest unit index.
//
// Thread-safety: immutable after Create; all methods are const.
#ifndef KVTIER_WORKER_BUDGET_LUKV_ALLOCATOR_H_
#define KVTIER_WORKER_BUDGET_LUKV_ALLOCATOR_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/budget/allocator.h"
#include "worker/budget/profile.h"

namespace kvtier {

// Indices of the vertices of the lower convex envelope of the points
// (i, curve[i]); always starts at 0 and ends at curve.size() - 1.
// REQUIRES: !curve.empty().
std::vector<int64_t> LowerConvexHullVertices(absl::Span<const double> curve);
// The envelope evaluated at every index (linear between vertices).
std::vector<double> LowerConvexEnvelope(absl::Span<const double> curve);

struct LukvSolverOptions {
  // A head keeps at least max(ceil(floor_fraction * length), protected, 1)
  // tokens. Default 0.01 (1% of the length, as in the reference). [0, 1).
  double floor_fraction = 0.01;
};

absl::Status ValidateLukvSolverOptions(const LukvSolverOptions& options);

// Evictions per unit (layer-major) minimising the sum of envelope losses for
// exactly `evictions` tokens in total. INVALID_ARGUMENT when the curves are
// invalid or `evictions` exceeds what the floors allow.
absl::StatusOr<std::vector<int64_t>> LukvGreedyEvictions(
    const std::vector<LukvCurve>& curves, int64_t evictions,
    const LukvSolverOptions& options = {});

// Table of one profile: per-sample tables, averaged.
absl::StatusOr<LukvTable> BuildLukvTable(const LukvProfile& profile,
                                         const LukvSolverOptions& options = {});

// Element-wise mean of tables of the same shape.
absl::StatusOr<LukvTable> AverageLukvTables(
    const std::vector<LukvTable>& tables);

class LukvAllocator final : public BudgetAllocator {
 public:
  // INVALID_ARGUMENT for a table that fails ValidateLukvTable.
  static absl::StatusOr<LukvAllocator> Create(LukvTable table);

  std::string_view name() const override { return "lukv"; }
  BudgetGranularity granularity() const override {
    return BudgetGranularity::kPerHead;
  }
  // Per-unit budgets summing to request.total. REQUIRES: request.context > 0
  // (tokens per head), shape equal to the table's, total >= units. The row
  // is the one of r = 1 - total / (units * context); its keep shares are
  // scaled to the exact total. A total above units * context gives every
  // unit its context and spreads the (useless) surplus evenly.
  absl::StatusOr<BudgetAllocation> Allocate(
      const BudgetRequest& request) const override;
  // The reference's online rule: keep (1 - prune) * context per unit, total
  // round(sum of those), largest remainder, min 1. r in [0, 1).
  absl::StatusOr<BudgetAllocation> AllocateForRatio(double ratio,
                                                    int64_t context) const;

  // Table row for a compression ratio; -1 means no pruning (r < 0.005).
  static int RowForRatio(double ratio);
  const LukvTable& table() const { return table_; }

 private:
  explicit LukvAllocator(LukvTable table) : table_(std::move(table)) {}
  BudgetAllocation Empty() const;

  LukvTable table_;
};

}  // namespace kvtier

#endif  // KVTIER_WORKER_BUDGET_LUKV_ALLOCATOR_H_
