// Budget-allocator profiles: what a profiling run writes and the XKV and
// LU-KV allocators read. All three are line-oriented text files (doubles
// printed with 17 significant digits, so they round-trip exactly), written
// atomically (temp file + rename) and validated on read. Formats:
//
// XKV importance profile (ALGORITHMS.md §5):
//   kvtier-xkv-profile 1
//   layers <L> samples <S> window <W> kernel <K>
//   curve <sample> <layer> <n>          S*L curves, any order, each once
//   <n doubles: per-rank increments>
//   ...
//   end
// Increment i of a layer's curve is the sum over heads of every head's
// (i+1)-th largest SnapKV score, so R_l(b) = sum_{i<b} inc[i] / sum inc.
// Increments are >= 0 and non-increasing (R_l concave); a curve whose total
// is 0 carries no information and is rejected.
//
// LU-KV utility-loss curves (ALGORITHMS.md §6):
//   kvtier-lukv-profile 1
//   layers <L> kv_heads <H> samples <S>
//   curve <sample> <layer> <head> <length> <protected> <n>
//   <n doubles: cumulative eviction loss C[0..n-1]>
//   ...
//   end
// C[m] is the oracle utility lost when the m lowest-ranked (by the scorer)
// evictable tokens are dropped: C[0] = 0, non-decreasing, n = length -
// protected + 1, where protected counts the sink and window tokens that are
// never evicted and so are not on the curve.
//
// LU-KV prune table:
//   kvtier-lukv-table 1
//   layers <L> kv_heads <H> levels 99
//   level <p> <L*H prune ratios in [0, 1), layer-major>     p = 1..99
//   end
// Row p holds each (layer, head)'s fraction of its tokens pruned when p% of
// all tokens are pruned globally.
//
// Thread-safety: free functions over caller-owned values; concurrent calls
// are safe as long as they do not write the same file.
#ifndef KVTIER_WORKER_BUDGET_PROFILE_H_
#define KVTIER_WORKER_BUDGET_PROFILE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvtier {

struct XkvProfile {
  uint32_t n_layers = 0;
  uint32_t window = 8;  // metadata: SnapKV window that produced the scores
  uint32_t kernel = 7;  // metadata: avg-pool kernel
  // [sample][layer] -> increments (see above).
  std::vector<std::vector<std::vector<double>>> samples;
};

struct LukvCurve {
  uint32_t length = 0;            // tokens of the head's context
  uint32_t protected_tokens = 0;  // sinks + window, never evicted
  std::vector<double> loss;       // C[0..length-protected]
};

struct LukvProfile {
  uint32_t n_layers = 0;
  uint32_t n_kv_heads = 0;
  // [sample][layer * n_kv_heads + head]
  std::vector<std::vector<LukvCurve>> samples;
};

inline constexpr int kLukvLevels = 99;

struct LukvTable {
  uint32_t n_layers = 0;
  uint32_t n_kv_heads = 0;
  // [level - 1][layer * n_kv_heads + head], level = 1..99.
  std::vector<std::vector<double>> prune;
};

// INVALID_ARGUMENT (with the offending sample/layer/head) unless the
// invariants stated in the file comment hold.
absl::Status ValidateXkvProfile(const XkvProfile& profile);
absl::Status ValidateLukvProfile(const LukvProfile& profile);
absl::Status ValidateLukvTable(const LukvTable& table);

// Append `from`'s samples to `into` (a calibration set is one profile with a
// sample per trace). INVALID_ARGUMENT, `into` unchanged, when the shapes or
// the XKV window/kernel differ or either side is invalid.
absl::Status AppendSamples(XkvProfile* into, const XkvProfile& from);
absl::Status AppendSamples(LukvProfile* into, const LukvProfile& from);

// Writers validate first and write nothing on error; INTERNAL on I/O error.
absl::Status WriteXkvProfile(const std::string& path, const XkvProfile& p);
absl::Status WriteLukvProfile(const std::string& path, const LukvProfile& p);
absl::Status WriteLukvTable(const std::string& path, const LukvTable& table);

// Readers: NOT_FOUND for a missing file, DATA_LOSS for a file that ends
// before `end`, INVALID_ARGUMENT for anything malformed or inconsistent.
absl::StatusOr<XkvProfile> ReadXkvProfile(const std::string& path);
absl::StatusOr<LukvProfile> ReadLukvProfile(const std::string& path);
absl::StatusOr<LukvTable> ReadLukvTable(const std::string& path);

}  // namespace kvtier

#endif  // KVTIER_WORKER_BUDGET_PROFILE_H_
