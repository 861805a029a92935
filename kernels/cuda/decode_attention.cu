#include <cmath>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/decode_attention.h"

namespace kvtier::kernels {
namespace {

using cuda_internal::WarpSum;

constexpr int kWarps = 4;
constexpr size_t kMaxSharedBytes = 48 * 1024;

// Shared floats a block needs: q [G][D], per warp m [G], l [G], acc [G][D].
size_t SharedBytes(uint32_t group, uint32_t dim) {
  return sizeof(float) * (size_t{group} * dim + kWarps * (2 * size_t{group} + size_t{group} * dim));
}

// Merges the kWarps per-warp states at `states` and writes the block's
// (out, lse) for its G query heads: to out/lse, or to the split workspace.
// Thread i handles (head j, channel c) pairs.
__device__ void WriteMergedState(const DecodeAttentionArgs& a, uint32_t b, uint32_t g,
                                 uint32_t split, uint32_t group, const float* states) {
  const uint32_t d = a.kv.head_dim;
  const size_t stride = 2 * group + size_t{group} * d;
  for (uint32_t i = threadIdx.x; i < group * d; i += blockDim.x) {
    const uint32_t j = i / d, c = i % d;
    float mx = -INFINITY;
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, states[w * stride + j]);
    float total = 0.0f, sum = 0.0f;
    if (mx != -INFINITY) {
      for (int w = 0; w < kWarps; ++w) {
        const float* st = states + w * stride;
        const float f = expf(st[j] - mx);
        total += st[group + j] * f;
        sum += st[2 * group + size_t{j} * d + c] * f;
      }
    }
    const size_t out_row = size_t{b} * a.n_q_heads + size_t{g} * group + j;
    float* out;
    float* lse;
    if (a.num_splits == 1) {
      out = a.out + out_row * d;
      lse = a.lse + out_row;
    } else {
      float* ws = static_cast<float*>(a.workspace);
      const size_t state = out_row * a.num_splits + split;
      out = ws + state * d;
      lse = ws + size_t{a.batch} * a.n_q_heads * a.num_splits * d + state;
    }
    const bool empty = !(total > 0.0f);
    out[c] = empty ? 0.0f : sum / total;
    if (c == 0) *lse = empty ? -INFINITY : mx + logf(total);
  }
}

// Block (b * n_kv_heads + g, split): the G query heads of KV head g over one
// run of list entries. Warp w takes the tokens w, w + 4, ... of the run and
// keeps its own online-softmax state; the warps' states merge at the end.
__global__ void DecodeKernel(DecodeAttentionArgs a) {
  extern __shared__ float smem[];
  const PagedKv& kv = a.kv;
  const uint32_t d = kv.head_dim;
  const uint32_t group = a.n_q_heads / kv.n_kv_heads;
  const uint32_t b = blockIdx.x / kv.n_kv_heads;
  const uint32_t g = blockIdx.x % kv.n_kv_heads;
  const uint32_t split = blockIdx.y;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* q = smem;
  float* m = q + size_t{group} * d + static_cast<size_t>(warp) * (2 * group + size_t{group} * d);
  float* l = m + group;
  float* acc = l + group;

  const size_t q_first = (size_t{b} * a.n_q_heads + size_t{g} * group) * d;
  for (uint32_t i = threadIdx.x; i < group * d; i += blockDim.x) {
    q[i] = LoadAsFloat(a.queries, a.query_type, q_first + i) * a.sm_scale;
  }
  for (uint32_t j = lane; j < group; j += 32) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
  }
  for (uint32_t i = lane; i < group * d; i += 32) acc[i] = 0.0f;
  __syncthreads();

  const uint32_t list = b * (kv.per_head_lists ? kv.n_kv_heads : 1u) + (kv.per_head_lists ? g : 0u);
  const int32_t list_begin = kv.indptr[list], list_end = kv.indptr[list + 1];
  const int32_t chunk = (list_end - list_begin + int32_t(a.num_splits) - 1) / int32_t(a.num_splits);
  const int32_t e0 = min(list_end, list_begin + chunk * int32_t(split));
  const int32_t e1 = min(list_end, e0 + chunk);
  const size_t row = size_t{kv.n_kv_heads} * d;
  const size_t v_offset = size_t{kv.page_size} * row;  // elements
  const int64_t n_slots = int64_t(e1 - e0) * kv.page_size;
  for (int64_t s = warp; s < n_slots; s += kWarps) {
    const int32_t e = e0 + int32_t(s / kv.page_size);
    const uint32_t t = uint32_t(s % kv.page_size);
    const uint32_t tokens = e == list_end - 1 ? uint32_t(kv.last_page_len[b]) : kv.page_size;
    if (t >= tokens) continue;  // uniform across the warp
    const char* page =
        static_cast<const char*>(kv.pool) + size_t(kv.indices[e]) * kv.page_stride_bytes;
    const size_t k_at = t * row + size_t{g} * d;
    for (uint32_t j = 0; j < group; ++j) {
      float partial = 0.0f;
      for (uint32_t c = lane; c < d; c += 32) {
        partial += q[j * d + c] * LoadAsFloat(page, kv.kv_type, k_at + c);
      }
      const float logit = WarpSum(partial);
      const float m_old = m[j];
      const float m_new = fmaxf(m_old, logit);
      const float rescale = expf(m_old - m_new);
      const float w = expf(logit - m_new);
      for (uint32_t c = lane; c < d; c += 32) {
        acc[j * d + c] =
            acc[j * d + c] * rescale + w * LoadAsFloat(page, kv.kv_type, v_offset + k_at + c);
      }
      __syncwarp();
      if (lane == 0) {
        m[j] = m_new;
        l[j] = l[j] * rescale + w;
      }
      __syncwarp();
    }
  }
  __syncthreads();

  WriteMergedState(a, b, g, split, group, q + size_t{group} * d);
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

absl::Status DecodeAttentionCuda(const DecodeAttentionArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate();
  if (!st.ok() || a.batch == 0) return st;
  const uint32_t group = a.n_q_heads / a.kv.n_kv_heads;
  const size_t shared = SharedBytes(group, a.kv.head_dim);
  if (shared > kMaxSharedBytes) {
    return absl::UnimplementedError(
        "DecodeAttentionCuda: (n_q_heads / n_kv_heads) * head_dim too large for one block");
  }
  if (a.num_splits > 1 &&
      (a.workspace == nullptr ||
       a.workspace_bytes <
           DecodeAttentionWorkspaceBytes(a.batch, a.n_q_heads, a.kv.head_dim, a.num_splits))) {
    return absl::InvalidArgumentError("DecodeAttentionCuda: workspace required for num_splits > 1");
  }
  DecodeKernel<<<dim3(a.batch * a.kv.n_kv_heads, a.num_splits), kWarps * 32, shared, stream>>>(a);
  absl::Status launched = LastLaunchStatus("DecodeAttentionCuda");
  if (!launched.ok() || a.num_splits == 1) return launched;
  MergeStatesArgs merge;
  merge.n_rows = a.batch * a.n_q_heads;
  merge.n_states = a.num_splits;
  merge.head_dim = a.kv.head_dim;
  merge.states_out = static_cast<const float*>(a.workspace);
  merge.states_lse = merge.states_out + size_t{merge.n_rows} * a.num_splits * a.kv.head_dim;
  merge.out = a.out;
  merge.lse = a.lse;
  return MergeAttentionStatesCuda(merge, stream);
}

absl::Status MergeAttentionStatesCuda(const MergeStatesArgs& a, cudaStream_t stream) {
  absl::Status st = a.Validate();
  if (!st.ok() || a.n_rows == 0) return st;
  MergeKernel<<<a.n_rows, 128, 0, stream>>>(a);
  return LastLaunchStatus("MergeAttentionStatesCuda");
}

}  // namespace kvtier::kernels
