// Log-sum-exp merges on CUDA: the partial states of a DecodePlan's cut
// lists (LaunchPlanMerge, run by DecodeAttentionCuda) and
// MergeAttentionStatesCuda's states.
#include <cmath>
#include <type_traits>

#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/merge_internal.h"
#include "kernels/decode_attention.h"

namespace kvtier::kernels {
namespace {

// Block per merge group: thread i takes kWidth channels (4 where head_dim
// allows, else 1) of one of its G rows.
template <int kWidth>
__global__ void PlanMergeKernel(DecodeAttentionArgs a, const DecodeMergeGroup* merges,
                                uint32_t n_partials) {
  using Vec = typename std::conditional<kWidth == 4, float4, float>::type;
  const DecodeMergeGroup mg = merges[blockIdx.x];
  const uint32_t d = a.kv.head_dim;
  const uint32_t group = a.n_q_heads / a.kv.n_kv_heads;
  const float* ws = static_cast<const float*>(a.workspace);
  const float* plse = ws + size_t{n_partials} * group * d;
  const uint32_t vecs = d / kWidth;
  for (uint32_t i = threadIdx.x; i < group * vecs; i += blockDim.x) {
    const uint32_t j = i / vecs, c = (i % vecs) * kWidth;
    float mx = -INFINITY;
    for (int32_t p = 0; p < mg.n_partials; ++p) {
      mx = fmaxf(mx, plse[size_t(mg.first_partial + p) * group + j]);
    }
    float total = 0.0f;
    float sum[kWidth] = {};
    if (mx != -INFINITY) {
      for (int32_t p = 0; p < mg.n_partials; ++p) {
        const size_t state = size_t(mg.first_partial + p) * group + j;
        if (plse[state] == -INFINITY) continue;
        const float f = expf(plse[state] - mx);
        const Vec v = *reinterpret_cast<const Vec*>(ws + state * d + c);
        const float* vf = reinterpret_cast<const float*>(&v);
        total += f;
        for (int w = 0; w < kWidth; ++w) sum[w] += f * vf[w];
      }
    }
    const size_t row = size_t(mg.seq) * a.n_q_heads + size_t(mg.kv_head) * group + j;
    const bool empty = mx == -INFINITY;
    Vec o;
    float* of = reinterpret_cast<float*>(&o);
    for (int w = 0; w < kWidth; ++w) of[w] = empty ? 0.0f : sum[w] / total;
    *reinterpret_cast<Vec*>(a.out + row * d + c) = o;
    if (c == 0) a.lse[row] = empty ? -INFINITY : mx + logf(total);
  }
}

// One block per row; thread c combines channel c of the row's states.
__global__ void MergeKernel(MergeStatesArgs a) {
  const size_t r = blockIdx.x;
  const float* s = a.states_lse + r * a.n_states;
  float mx = -INFINITY;
  for (uint32_t i = 0; i < a.n_states; ++i) mx = fmaxf(mx, s[i]);
  float total = 0.0f;
  if (mx != -INFINITY) {
    for (uint32_t i = 0; i < a.n_states; ++i) {
      if (s[i] != -INFINITY) total += expf(s[i] - mx);
    }
  }
  for (uint32_t c = threadIdx.x; c < a.head_dim; c += blockDim.x) {
    float sum = 0.0f;
    if (mx != -INFINITY) {
      for (uint32_t i = 0; i < a.n_states; ++i) {
        if (s[i] == -INFINITY) continue;
        sum += expf(s[i] - mx) * a.states_out[(r * a.n_states + i) * a.head_dim + c];
      }
    }
    a.out[r * a.head_dim + c] = mx == -INFINITY ? 0.0f : sum / total;
  }
  if (threadIdx.x == 0) a.lse[r] = mx == -INFINITY ? -INFINITY : mx + logf(total);
}

}  // namespace

namespace cuda_internal {

absl::Status LaunchPlanMerge(const DecodeAttentionArgs& a, const DecodePlanView& plan,
                             cudaStream_t stream) {
  if (plan.n_merges == 0) return absl::OkStatus();
  // float4 rows where head_dim allows (out and workspace are 16-byte aligned).
  if (a.kv.head_dim % 4 == 0) {
    PlanMergeKernel<4><<<plan.n_merges, 128, 0, stream>>>(a, plan.merges, plan.n_partials);
  } else {
    PlanMergeKernel<1><<<plan.n_merges, 128, 0, stream>>>(a, plan.merges, plan.n_partials);
  }
  return LastLaunchStatus("DecodeAttentionCuda merge");
}

}  // namespace cuda_internal

absl::Status MergeAttentionStatesCuda(const MergeStatesArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate();
  if (!st.ok() || a.n_rows == 0) return st;
  MergeKernel<<<a.n_rows, 128, 0, stream>>>(a);
  return LastLaunchStatus("MergeAttentionStatesCuda");
}

}  // namespace kvtier::kernels
