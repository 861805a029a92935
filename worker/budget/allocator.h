// Budget allocators: split one total KV budget across layers (XKV) or across
// (layer, KV-head) units (LU-KV), or evenly (uniform). The unit of the budget
// (tokens or pages) is the caller's; allocators only ever conserve it: every
// successful allocation sums to exactly the requested total.
//
//   UniformAllocator uniform(BudgetGranularity::kPerLayer);
//   ASSIGN_OR_RETURN(BudgetAllocation a,
//                    uniform.Allocate({.n_layers = 32, .n_kv_heads = 8,
//                                      .total = 4096}));
//   int64_t pages_of_layer_3 = a.LayerBudget(3);
//
// Thread-safety: allocators are immutable after construction; Allocate is
// const and safe to call concurrently.
#ifndef KVTIER_WORKER_BUDGET_ALLOCATOR_H_
#define KVTIER_WORKER_BUDGET_ALLOCATOR_H_

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier {

enum class BudgetGranularity {
  // One budget per layer, shared by all KV heads of the layer (a page holds
  // every KV head). total = sum over layers.
  kPerLayer,
  // One budget per (layer, KV head) unit. total = sum over units.
  kPerHead,
};

struct BudgetRequest {
  int32_t n_layers = 0;
  int32_t n_kv_heads = 0;
  // Budget to split, summed over the granularity's entries. > 0.
  int64_t total = 0;
  // Context length in budget units (per layer or per head): what keeping
  // everything costs. 0 = unknown; allocators that need it say so.
  int64_t context = 0;
};

// Bounds that keep every product of request fields (units * context) well
// inside int64.
inline constexpr int32_t kMaxBudgetLayers = 1 << 12;
inline constexpr int32_t kMaxBudgetKvHeads = 1 << 12;
inline constexpr int64_t kMaxBudgetContext = int64_t{1} << 32;
inline constexpr int64_t kMaxBudgetTotal = int64_t{1} << 56;

// INVALID_ARGUMENT unless layers, heads and total are positive, context is
// not negative, and each is within the bounds above.
absl::Status ValidateBudgetRequest(const BudgetRequest& request);

// Invariant: budgets.size() == n_layers (kPerLayer) or n_layers * n_kv_heads
// (kPerHead, layer-major); every budget >= 0.
struct BudgetAllocation {
  BudgetGranularity granularity = BudgetGranularity::kPerLayer;
  int32_t n_layers = 0;
  int32_t n_kv_heads = 0;
  std::vector<int64_t> budgets;

  int64_t Total() const;
  // kPerLayer: the layer's budget. kPerHead: the sum over its heads.
  int64_t LayerBudget(int32_t layer) const;
  // kPerLayer: the layer's budget (every head keeps it). kPerHead: the unit's.
  int64_t HeadBudget(int32_t layer, int32_t head) const;
};

class BudgetAllocator {
 public:
  virtual ~BudgetAllocator() = default;
  virtual std::string_view name() const = 0;
  virtual BudgetGranularity granularity() const = 0;
  // On success the allocation sums to exactly request.total.
  virtual absl::StatusOr<BudgetAllocation> Allocate(
      const BudgetRequest& request) const = 0;
};

// Equal shares; the remainder goes one unit each to the lowest indices, so
// budgets differ by at most one.
class UniformAllocator final : public BudgetAllocator {
 public:
  explicit UniformAllocator(
      BudgetGranularity granularity = BudgetGranularity::kPerLayer)
      : granularity_(granularity) {}
  std::string_view name() const override { return "uniform"; }
  BudgetGranularity granularity() const override { return granularity_; }
  absl::StatusOr<BudgetAllocation> Allocate(
      const BudgetRequest& request) const override;

 private:
  const BudgetGranularity granularity_;
};

// Rounds non-negative `ideal` shares to integers in [min_each, max_each]
// summing to exactly `total` (largest-remainder / Hamilton method): floors
// first, then one unit at a time to the largest fractional remainders (or,
// when the clamped floors overshoot, from the smallest), ties to the lowest
// index. max_each < 0 means unbounded. INVALID_ARGUMENT when no such vector
// exists or an ideal share is negative or not finite.
absl::StatusOr<std::vector<int64_t>> RoundLargestRemainder(
    absl::Span<const double> ideal, int64_t total, int64_t min_each,
    int64_t max_each = -1);

}  // namespace kvtier

#endif  // KVTIER_WORKER_BUDGET_ALLOCATOR_H_
