#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/internal.h"
#include "kernels/decode_attention.h"

namespace kvtier::kernels {
namespace {

constexpr char kWhat[] = "MergeAttentionStates";
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

void MergeRow(const MergeStatesArgs& a, size_t r) {
  const size_t d = a.head_dim;
  const float* s = a.states_lse + r * a.n_states;
  const float* v = a.states_out + r * a.n_states * d;
  float* out = a.out + r * d;
  float m = kNegInf;
  for (uint32_t i = 0; i < a.n_states; ++i) m = m < s[i] ? s[i] : m;
  std::fill_n(out, d, 0.0f);
  if (m == kNegInf) {
    a.lse[r] = kNegInf;
    return;
  }
  float total = 0.0f;
  for (uint32_t i = 0; i < a.n_states; ++i) {
    if (s[i] == kNegInf) continue;
    const float w = std::exp(s[i] - m);
    total += w;
    const float* vi = v + i * d;
    for (size_t c = 0; c < d; ++c) out[c] += w * vi[c];
  }
  const float inv = 1.0f / total;
  for (size_t c = 0; c < d; ++c) out[c] *= inv;
  a.lse[r] = m + std::log(total);
}

}  // namespace

absl::Status MergeStatesArgs::Validate() const {
  using internal::CheckNotNull;
  using internal::CheckRange;
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "n_states", n_states, 1, 1u << 16));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "head_dim", head_dim, 1, internal::kMaxHeadDim));
  if (n_rows == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "states_out", states_out));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "states_lse", states_lse));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "out", out));
  return CheckNotNull(kWhat, "lse", lse);
}

absl::Status MergeAttentionStatesCpu(const MergeStatesArgs& a, ThreadPool* pool) {
  KVTIER_KERNELS_RETURN_IF_ERROR(a.Validate());
  internal::ParallelChunks(pool, a.n_rows, 8, [&](size_t begin, size_t end) {
    for (size_t r = begin; r < end; ++r) MergeRow(a, r);
  });
  return absl::OkStatus();
}

}  // namespace kvtier::kernels
