#include "worker/budget/lukv_allocator.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <queue>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier {
namespace {

// Most tokens a unit may lose: its length minus its floor.
int64_t MaxEvictions(const LukvCurve& c, const LukvSolverOptions& o) {
  const int64_t len = c.length;
  const int64_t floor_tokens = std::max<int64_t>(
      // The epsilon keeps 0.01 * 200 (2.0000000000000004) at 2.
      {static_cast<int64_t>(std::ceil(o.floor_fraction * len - 1e-9)),
       int64_t{c.protected_tokens}, 1});
  return std::clamp<int64_t>(len - floor_tokens, 0,
                             static_cast<int64_t>(c.loss.size()) - 1);
}

// Segment-wise greedy over the capped envelopes. Heap entries are
// (slope, unit); the smallest slope pops first, lower unit on ties.
class EnvelopeGreedy {
 public:
  EnvelopeGreedy(const std::vector<LukvCurve>& curves,
                 const LukvSolverOptions& o)
      : n_(curves.size()), evicted_(n_, 0), seg_(n_, 0), taken_(n_, 0) {
    vertices_.resize(n_);
    loss_.resize(n_);
    for (size_t u = 0; u < n_; ++u) {
      const int64_t cap = MaxEvictions(curves[u], o);
      capacity_ += cap;
      loss_[u].assign(curves[u].loss.begin(), curves[u].loss.begin() + cap + 1);
      vertices_[u] = LowerConvexHullVertices(loss_[u]);
      PushSegment(u);
    }
  }

  int64_t capacity() const { return capacity_; }
  const std::vector<int64_t>& evicted() const { return evicted_; }

  // Evicts until `target` tokens in total are gone (or nothing is left).
  void RunTo(int64_t target) {
    while (total_ < target && !heap_.empty()) {
      const auto [slope, u] = heap_.top();
      heap_.pop();
      const auto& v = vertices_[u];
      const int64_t seg_len = v[seg_[u] + 1] - v[seg_[u]];
      const int64_t take = std::min(seg_len - taken_[u], target - total_);
      evicted_[u] += take;
      taken_[u] += take;
      total_ += take;
      if (taken_[u] == seg_len) {
        ++seg_[u];
        taken_[u] = 0;
        PushSegment(u);
      } else {
        heap_.push({slope, u});
      }
    }
  }

 private:
  void PushSegment(size_t u) {
    const auto& v = vertices_[u];
    if (seg_[u] + 1 >= v.size()) return;
    const int64_t a = v[seg_[u]], b = v[seg_[u] + 1];
    heap_.push({(loss_[u][b] - loss_[u][a]) / static_cast<double>(b - a), u});
  }

  using Entry = std::pair<double, size_t>;
  size_t n_;
  std::vector<std::vector<double>> loss_;
  std::vector<std::vector<int64_t>> vertices_;
  std::vector<int64_t> evicted_;
  std::vector<size_t> seg_;
  std::vector<int64_t> taken_;
  int64_t capacity_ = 0;
  int64_t total_ = 0;
  std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> heap_;
};

absl::Status ValidateCurves(const std::vector<LukvCurve>& curves) {
  LukvProfile p;
  p.n_layers = 1;
  p.n_kv_heads = static_cast<uint32_t>(curves.size());
  p.samples.push_back(curves);
  return ValidateLukvProfile(p);
}

absl::StatusOr<LukvTable> TableForSample(const LukvProfile& profile,
                                         size_t sample,
                                         const LukvSolverOptions& o) {
  const std::vector<LukvCurve>& curves = profile.samples[sample];
  EnvelopeGreedy greedy(curves, o);
  int64_t all_tokens = 0;
  for (const LukvCurve& c : curves) all_tokens += c.length;
  LukvTable table;
  table.n_layers = profile.n_layers;
  table.n_kv_heads = profile.n_kv_heads;
  table.prune.resize(kLukvLevels);
  for (int p = 1; p <= kLukvLevels; ++p) {
    greedy.RunTo(std::llround(p / 100.0 * static_cast<double>(all_tokens)));
    std::vector<double>& row = table.prune[p - 1];
    row.resize(curves.size());
    for (size_t u = 0; u < curves.size(); ++u) {
      row[u] = static_cast<double>(greedy.evicted()[u]) / curves[u].length;
    }
  }
  return table;
}

}  // namespace

std::vector<int64_t> LowerConvexHullVertices(absl::Span<const double> curve) {
  std::vector<int64_t> hull;
  const int64_t n = static_cast<int64_t>(curve.size());
  for (int64_t i = 0; i < n; ++i) {
    // Drop the last vertex while it lies on or above the chord from the one
    // before it to point i (a non-left turn).
    while (hull.size() >= 2) {
      const int64_t a = hull[hull.size() - 2], b = hull.back();
      const double cross = static_cast<double>(b - a) * (curve[i] - curve[a]) -
                           (curve[b] - curve[a]) * static_cast<double>(i - a);
      if (cross > 0) break;
      hull.pop_back();
    }
    hull.push_back(i);
  }
  return hull;
}

std::vector<double> LowerConvexEnvelope(absl::Span<const double> curve) {
  const std::vector<int64_t> v = LowerConvexHullVertices(curve);
  std::vector<double> env(curve.size());
  env[0] = curve[0];
  for (size_t k = 0; k + 1 < v.size(); ++k) {
    const int64_t a = v[k], b = v[k + 1];
    for (int64_t i = a; i <= b; ++i) {
      env[i] = curve[a] + (curve[b] - curve[a]) * static_cast<double>(i - a) /
                              static_cast<double>(b - a);
    }
  }
  return env;
}

absl::Status ValidateLukvSolverOptions(const LukvSolverOptions& o) {
  if (!(o.floor_fraction >= 0 && o.floor_fraction < 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LU-KV floor_fraction ", o.floor_fraction, " not in [0, 1)"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int64_t>> LukvGreedyEvictions(
    const std::vector<LukvCurve>& curves, int64_t evictions,
    const LukvSolverOptions& options) {
  RETURN_IF_ERROR(ValidateLukvSolverOptions(options));
  RETURN_IF_ERROR(ValidateCurves(curves));
  EnvelopeGreedy greedy(curves, options);
  if (evictions < 0 || evictions > greedy.capacity()) {
    return absl::InvalidArgumentError(
        absl::StrCat("LU-KV evictions ", evictions, " not in [0, ",
                     greedy.capacity(), "] allowed by the floors"));
  }
  greedy.RunTo(evictions);
  return greedy.evicted();
}

absl::StatusOr<LukvTable> BuildLukvTable(const LukvProfile& profile,
                                         const LukvSolverOptions& options) {
  RETURN_IF_ERROR(ValidateLukvSolverOptions(options));
  RETURN_IF_ERROR(ValidateLukvProfile(profile));
  std::vector<LukvTable> tables;
  for (size_t s = 0; s < profile.samples.size(); ++s) {
    ASSIGN_OR_RETURN(LukvTable t, TableForSample(profile, s, options));
    tables.push_back(std::move(t));
  }
  return AverageLukvTables(tables);
}

absl::StatusOr<LukvTable> AverageLukvTables(
    const std::vector<LukvTable>& tables) {
  if (tables.empty()) {
    return absl::InvalidArgumentError("no LU-KV tables to average");
  }
  for (const LukvTable& t : tables) {
    RETURN_IF_ERROR(ValidateLukvTable(t));
    if (t.n_layers != tables[0].n_layers ||
        t.n_kv_heads != tables[0].n_kv_heads) {
      return absl::InvalidArgumentError("LU-KV tables differ in shape");
    }
  }
  LukvTable mean = tables[0];
  for (int p = 0; p < kLukvLevels; ++p) {
    for (size_t u = 0; u < mean.prune[p].size(); ++u) {
      double sum = 0;
      for (const LukvTable& t : tables) sum += t.prune[p][u];
      mean.prune[p][u] = sum / tables.size();
    }
  }
  return mean;
}

// ------------------------------------------------------------ allocator

absl::StatusOr<LukvAllocator> LukvAllocator::Create(LukvTable table) {
  RETURN_IF_ERROR(ValidateLukvTable(table));
  return LukvAllocator(std::move(table));
}

int LukvAllocator::RowForRatio(double ratio) {
  return std::clamp(static_cast<int>(std::lround(100 * ratio)) - 1, -1,
                    kLukvLevels - 1);
}

BudgetAllocation LukvAllocator::Empty() const {
  BudgetAllocation out;
  out.granularity = BudgetGranularity::kPerHead;
  out.n_layers = static_cast<int32_t>(table_.n_layers);
  out.n_kv_heads = static_cast<int32_t>(table_.n_kv_heads);
  return out;
}

absl::StatusOr<BudgetAllocation> LukvAllocator::Allocate(
    const BudgetRequest& request) const {
  RETURN_IF_ERROR(ValidateBudgetRequest(request));
  if (request.n_layers != static_cast<int32_t>(table_.n_layers) ||
      request.n_kv_heads != static_cast<int32_t>(table_.n_kv_heads)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LU-KV table is ", table_.n_layers, "x", table_.n_kv_heads,
        ", request is ", request.n_layers, "x", request.n_kv_heads));
  }
  if (request.context <= 0) {
    return absl::InvalidArgumentError("LU-KV needs the context length");
  }
  const int64_t units = int64_t{request.n_layers} * request.n_kv_heads;
  if (request.total < units) {
    return absl::InvalidArgumentError(absl::StrCat(
        "LU-KV total ", request.total, " below one per unit (", units, ")"));
  }
  BudgetAllocation out = Empty();
  const int64_t full = units * request.context;
  if (request.total >= full) {
    ASSIGN_OR_RETURN(out.budgets,
                     RoundLargestRemainder(
                         std::vector<double>(
                             units, static_cast<double>(request.total) / units),
                         request.total, request.context));
    return out;
  }
  const int row = RowForRatio(1.0 - static_cast<double>(request.total) / full);
  std::vector<double> ideal(units);
  double sum = 0;
  for (int64_t u = 0; u < units; ++u) {
    const double prune = row < 0 ? 0.0 : table_.prune[row][u];
    ideal[u] = (1.0 - prune) * static_cast<double>(request.context);
    sum += ideal[u];
  }
  for (double& x : ideal) x *= static_cast<double>(request.total) / sum;
  ASSIGN_OR_RETURN(out.budgets, RoundLargestRemainder(ideal, request.total, 1,
                                                      request.context));
  return out;
}

absl::StatusOr<BudgetAllocation> LukvAllocator::AllocateForRatio(
    double ratio, int64_t context) const {
  if (!(ratio >= 0 && ratio < 1) || context <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("LU-KV needs a ratio in [0, 1) and context > 0, got ",
                     ratio, ", ", context));
  }
  const int row = RowForRatio(ratio);
  const size_t units = size_t{table_.n_layers} * table_.n_kv_heads;
  std::vector<double> ideal(units);
  double sum = 0;
  for (size_t u = 0; u < units; ++u) {
    const double prune = row < 0 ? 0.0 : table_.prune[row][u];
    ideal[u] = (1.0 - prune) * static_cast<double>(context);
    sum += ideal[u];
  }
  const int64_t total =
      std::max<int64_t>(std::llround(sum), static_cast<int64_t>(units));
  BudgetAllocation out = Empty();
  ASSIGN_OR_RETURN(out.budgets,
                   RoundLargestRemainder(ideal, total, 1, context));
  return out;
}

}  // namespace kvtier
