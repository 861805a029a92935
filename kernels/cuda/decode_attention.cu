// Paged decode attention on CUDA: one CTA per work item of a DecodePlan
// (kernels/decode_plan.h), then a log-sum-exp merge of the items a list was
// cut into (merge_states.cu).
//
// Two CTA bodies share the plan and the merge:
// - PagedDecodeKernel<KV, D, G>, for fp16/bf16 pages, head_dim 64/128/256,
//   G = n_q_heads / n_kv_heads in {1, 2, 3, 4, 8}, 16-byte aligned pages:
//   thread (tx, ty, tz) of a (D/8, G, Z) block holds channels tx*8..tx*8+7
//   of query head ty in registers; K and V tiles of its group z stream
//   through a multi-stage cp.async pipeline in shared memory (16-byte
//   copies, masked ones zero-filled); each tile updates the online softmax
//   once, accumulators in registers; the Z groups merge at the end.
// - GenericDecodeKernel, for every other shape: one warp per token, the
//   accumulators in shared memory. Correct everywhere, not fast.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <map>
#include <tuple>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cuda_status.h"
#include "kernels/cuda/merge_internal.h"
#include "kernels/decode_plan.h"

namespace kvtier::kernels {
namespace {

using cuda_internal::WarpSum;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- shared by both bodies --------------------------------------------------

// Where an item's G rows go: the output, or its partial state.
struct RowSink {
  float* out;  // [G][D] rows, stride D
  float* lse;  // [G]
};

__device__ __forceinline__ RowSink SinkOf(const DecodeAttentionArgs& a, const DecodeWorkItem& w,
                                          uint32_t group, uint32_t n_partials) {
  const uint32_t d = a.kv.head_dim;
  if (w.partial < 0) {
    const size_t row = size_t(w.seq) * a.n_q_heads + size_t(w.kv_head) * group;
    return {a.out + row * d, a.lse + row};
  }
  float* ws = static_cast<float*>(a.workspace);
  const size_t state = size_t(w.partial) * group;
  return {ws + state * d, ws + size_t{n_partials} * group * d + state};
}

// Tokens of the item with keys: every page is full except the list's last.
__device__ __forceinline__ int64_t ValidTokens(const DecodeAttentionArgs& a,
                                               const DecodeWorkItem& w) {
  int64_t n = int64_t(w.end - w.begin) * a.kv.page_size;
  if (w.end == w.list_end && w.end > w.begin) n -= a.kv.page_size - a.kv.last_page_len[w.seq];
  return n;
}

// ---- the specialised body ---------------------------------------------------

__device__ __forceinline__ void CpAsync16(void* smem, const void* global, bool valid) {
  const auto dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? 16 : 0;  // 0: the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(global),
               "r"(src_bytes));
}
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

template <ScalarType KV>
__device__ __forceinline__ void Unpack8(const uint4& raw, float* f) {
  if constexpr (KV == ScalarType::kF16) {
    const auto* h = reinterpret_cast<const __half2*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 v = __half22float2(h[i]);
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  } else {
    const auto* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 v = __bfloat1622float2(h[i]);
      f[2 * i] = v.x;
      f[2 * i + 1] = v.y;
    }
  }
}

// Compile-time shape of the specialised body.
template <uint32_t D, uint32_t G>
struct Shape {
  static constexpr uint32_t kVec = 8;           // 2-byte elements per 16-byte copy
  static constexpr uint32_t kBdx = D / kVec;    // threads over one head's channels
  static constexpr uint32_t kBdy = G;           // one query head each
  static constexpr uint32_t kBdz = (128 / (kBdx * kBdy)) > 0 ? 128 / (kBdx * kBdy) : 1;
  static constexpr uint32_t kThreads = kBdx * kBdy * kBdz;
  static constexpr uint32_t kRowsPerThread = G >= 8 ? 1 : (G == 1 ? 4 : 8 / G);
  static constexpr uint32_t kTokensPerGroup = kBdy * kRowsPerThread;  // per z, per stage
  static constexpr uint32_t kTokensPerStage = kBdz * kTokensPerGroup;
  static constexpr uint32_t kRowBytes = D * 2;
  static constexpr uint32_t kStageBytes = 2 * kTokensPerStage * kRowBytes;  // K then V
  static constexpr uint32_t kStages = kStageBytes >= 16384 ? 3 : 4;
  static constexpr uint32_t kPipelineBytes = kStages * kStageBytes;
  static constexpr uint32_t kMergeBytes = kBdz * kBdy * (D + 2) * sizeof(float);
  static constexpr uint32_t kSharedBytes =
      kPipelineBytes > kMergeBytes ? kPipelineBytes : kMergeBytes;
  static_assert(kBdx <= 32 && 32 % kBdx == 0, "a head's channels must sit in one warp");
  static_assert(kSharedBytes <= 48 * 1024, "static launch limit");
};

// Issues the copies of stage `stage` of the item into buffer `buf`. Token
// positions fit 32 bits: the plan keeps an item under 2^31 tokens.
template <uint32_t D, uint32_t G>
__device__ __forceinline__ void LoadStage(const DecodeAttentionArgs& a, const DecodeWorkItem& w,
                                          uint32_t valid, uint32_t stage, uint8_t* buf,
                                          uint32_t tx, uint32_t ty, uint32_t tz) {
  using S = Shape<D, G>;
  const PagedKv& kv = a.kv;
  const size_t row_stride = size_t{kv.n_kv_heads} * S::kRowBytes;  // one token, all heads
  const size_t v_offset = size_t{kv.page_size} * row_stride;
  uint8_t* k_tile = buf;
  uint8_t* v_tile = buf + S::kTokensPerStage * S::kRowBytes;
#pragma unroll
  for (uint32_t i = 0; i < S::kRowsPerThread; ++i) {
    const uint32_t row = tz * S::kTokensPerGroup + ty * S::kRowsPerThread + i;
    const uint32_t pos = stage * S::kTokensPerStage + row;
    const bool ok = pos < valid;
    const char* src = static_cast<const char*>(kv.pool);
    if (ok) {
      const int32_t entry = w.begin + int32_t(pos / kv.page_size);
      const uint32_t slot = pos % kv.page_size;
      src += size_t(kv.indices[entry]) * kv.page_stride_bytes + slot * row_stride +
             size_t(w.kv_head) * S::kRowBytes + tx * 16;
    }
    CpAsync16(k_tile + row * S::kRowBytes + tx * 16, src, ok);
    CpAsync16(v_tile + row * S::kRowBytes + tx * 16, ok ? src + v_offset : src, ok);
  }
}

template <ScalarType KV, uint32_t D, uint32_t G>
__global__ void __launch_bounds__(Shape<D, G>::kThreads)
    PagedDecodeKernel(DecodeAttentionArgs a, const DecodeWorkItem* items, uint32_t n_partials) {
  using S = Shape<D, G>;
  __shared__ __align__(16) uint8_t smem[S::kSharedBytes];
  const DecodeWorkItem w = items[blockIdx.x];
  const uint32_t tx = threadIdx.x % S::kBdx;
  const uint32_t ty = (threadIdx.x / S::kBdx) % S::kBdy;
  const uint32_t tz = threadIdx.x / (S::kBdx * S::kBdy);

  // The query in base-2 logits: exp2(q.k * scale * log2 e) = exp(q.k * scale).
  float q[S::kVec];
  {
    const size_t at = (size_t(w.seq) * a.n_q_heads + size_t(w.kv_head) * G + ty) * D + tx * S::kVec;
#pragma unroll
    for (uint32_t i = 0; i < S::kVec; ++i) {
      q[i] = LoadAsFloat(a.queries, a.query_type, at + i) * (a.sm_scale * kLog2e);
    }
  }
  float m = -INFINITY, denom = 0.0f, o[S::kVec];
#pragma unroll
  for (uint32_t i = 0; i < S::kVec; ++i) o[i] = 0.0f;

  // The lanes of this thread's warp (the last warp may be partial).
  const uint32_t warp_lanes = min(32u, S::kThreads - (threadIdx.x & ~31u));
  const unsigned lanes_mask = warp_lanes == 32 ? cuda_internal::kFullMask : (1u << warp_lanes) - 1;

  const auto valid = static_cast<uint32_t>(ValidTokens(a, w));
  const uint32_t n_stages = (valid + S::kTokensPerStage - 1) / S::kTokensPerStage;
#pragma unroll
  for (uint32_t s = 0; s + 1 < S::kStages; ++s) {
    if (s < n_stages) LoadStage<D, G>(a, w, valid, s, smem + s * S::kStageBytes, tx, ty, tz);
    CpAsyncCommit();
  }
  for (uint32_t stage = 0; stage < n_stages; ++stage) {
    CpAsyncWait<S::kStages - 2>();
    __syncthreads();  // the stage landed for every thread; the previous one is consumed
    const uint32_t next = stage + S::kStages - 1;
    if (next < n_stages) {
      LoadStage<D, G>(a, w, valid, next, smem + (next % S::kStages) * S::kStageBytes, tx, ty, tz);
    }
    CpAsyncCommit();

    const uint8_t* k_tile = smem + (stage % S::kStages) * S::kStageBytes;
    const uint8_t* v_tile = k_tile + S::kTokensPerStage * S::kRowBytes;
    const uint32_t first_row = tz * S::kTokensPerGroup;
    float logit[S::kTokensPerGroup];
    float m_new = m;
#pragma unroll
    for (uint32_t j = 0; j < S::kTokensPerGroup; ++j) {
      float k[S::kVec];
      Unpack8<KV>(*reinterpret_cast<const uint4*>(k_tile + (first_row + j) * S::kRowBytes +
                                                  tx * 16),
                  k);
      float dot = 0.0f;
#pragma unroll
      for (uint32_t i = 0; i < S::kVec; ++i) dot += q[i] * k[i];
#pragma unroll
      for (uint32_t offset = S::kBdx / 2; offset > 0; offset /= 2) {
        dot += __shfl_xor_sync(lanes_mask, dot, offset);
      }
      const bool in = stage * S::kTokensPerStage + first_row + j < valid;
      logit[j] = in ? dot : -INFINITY;
      m_new = fmaxf(m_new, logit[j]);
    }
    if (m_new == -INFINITY) continue;  // no key of this group yet
    const float rescale = exp2f(m - m_new);
    denom *= rescale;
#pragma unroll
    for (uint32_t i = 0; i < S::kVec; ++i) o[i] *= rescale;
#pragma unroll
    for (uint32_t j = 0; j < S::kTokensPerGroup; ++j) {
      const float p = exp2f(logit[j] - m_new);  // 0 for masked rows, whose V is zero
      denom += p;
      float v[S::kVec];
      Unpack8<KV>(*reinterpret_cast<const uint4*>(v_tile + (first_row + j) * S::kRowBytes +
                                                  tx * 16),
                  v);
#pragma unroll
      for (uint32_t i = 0; i < S::kVec; ++i) o[i] += p * v[i];
    }
    m = m_new;
  }
  CpAsyncWait<0>();
  __syncthreads();  // the pipeline's buffers become the merge's

  // Merge the Z groups' states of each query head.
  float* st_o = reinterpret_cast<float*>(smem);          // [Z][G][D]
  float* st_m = st_o + size_t{S::kBdz} * S::kBdy * D;    // [Z][G]
  float* st_d = st_m + S::kBdz * S::kBdy;                // [Z][G]
  const uint32_t head_state = tz * S::kBdy + ty;
#pragma unroll
  for (uint32_t i = 0; i < S::kVec; ++i) st_o[head_state * D + tx * S::kVec + i] = o[i];
  if (tx == 0) {
    st_m[head_state] = m;
    st_d[head_state] = denom;
  }
  __syncthreads();
  if (tz != 0) return;
  float mx = -INFINITY;
  for (uint32_t z = 0; z < S::kBdz; ++z) mx = fmaxf(mx, st_m[z * S::kBdy + ty]);
  float total = 0.0f, acc[S::kVec] = {};
  if (mx != -INFINITY) {
    for (uint32_t z = 0; z < S::kBdz; ++z) {
      const uint32_t hs = z * S::kBdy + ty;
      if (st_m[hs] == -INFINITY) continue;
      const float f = exp2f(st_m[hs] - mx);
      total += st_d[hs] * f;
#pragma unroll
      for (uint32_t i = 0; i < S::kVec; ++i) acc[i] += st_o[hs * D + tx * S::kVec + i] * f;
    }
  }
  const RowSink sink = SinkOf(a, w, G, n_partials);
  const bool empty = !(total > 0.0f);
  float4* dst = reinterpret_cast<float4*>(sink.out + size_t{ty} * D + tx * S::kVec);
  dst[0] = empty ? make_float4(0, 0, 0, 0)
                 : make_float4(acc[0] / total, acc[1] / total, acc[2] / total, acc[3] / total);
  dst[1] = empty ? make_float4(0, 0, 0, 0)
                 : make_float4(acc[4] / total, acc[5] / total, acc[6] / total, acc[7] / total);
  if (tx == 0) sink.lse[ty] = empty ? -INFINITY : (mx + log2f(total)) * kLn2;
}

// ---- the generic body -------------------------------------------------------

constexpr int kGenericWarps = 4;
constexpr size_t kMaxSharedBytes = 48 * 1024;

// Shared floats: q [G][D], per warp m [G], l [G], acc [G][D].
size_t GenericSharedBytes(uint32_t group, uint32_t dim) {
  return sizeof(float) *
         (size_t{group} * dim + kGenericWarps * (2 * size_t{group} + size_t{group} * dim));
}

// Merges the warps' states and writes the item's G rows.
__device__ void WriteGenericState(const DecodeAttentionArgs& a, const DecodeWorkItem& w,
                                  uint32_t group, uint32_t n_partials, const float* states) {
  const uint32_t d = a.kv.head_dim;
  const size_t stride = 2 * group + size_t{group} * d;
  const RowSink sink = SinkOf(a, w, group, n_partials);
  for (uint32_t i = threadIdx.x; i < group * d; i += blockDim.x) {
    const uint32_t j = i / d, c = i % d;
    float mx = -INFINITY;
    for (int wp = 0; wp < kGenericWarps; ++wp) mx = fmaxf(mx, states[wp * stride + j]);
    float total = 0.0f, sum = 0.0f;
    if (mx != -INFINITY) {
      for (int wp = 0; wp < kGenericWarps; ++wp) {
        const float* st = states + wp * stride;
        const float f = expf(st[j] - mx);
        total += st[group + j] * f;
        sum += st[2 * group + size_t{j} * d + c] * f;
      }
    }
    const bool empty = !(total > 0.0f);
    sink.out[size_t{j} * d + c] = empty ? 0.0f : sum / total;
    if (c == 0) sink.lse[j] = empty ? -INFINITY : mx + logf(total);
  }
}

// Warp w takes tokens w, w + 4, ... of the item with its own online softmax.
__global__ void GenericDecodeKernel(DecodeAttentionArgs a, const DecodeWorkItem* items,
                                    uint32_t n_partials) {
  extern __shared__ float generic_smem[];
  const PagedKv& kv = a.kv;
  const DecodeWorkItem w = items[blockIdx.x];
  const uint32_t d = kv.head_dim;
  const uint32_t group = a.n_q_heads / kv.n_kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float* q = generic_smem;
  float* m = q + size_t{group} * d + size_t(warp) * (2 * group + size_t{group} * d);
  float* l = m + group;
  float* acc = l + group;

  const size_t q_first = (size_t(w.seq) * a.n_q_heads + size_t(w.kv_head) * group) * d;
  for (uint32_t i = threadIdx.x; i < group * d; i += blockDim.x) {
    q[i] = LoadAsFloat(a.queries, a.query_type, q_first + i) * a.sm_scale;
  }
  for (uint32_t j = lane; j < group; j += 32) {
    m[j] = -INFINITY;
    l[j] = 0.0f;
  }
  for (uint32_t i = lane; i < group * d; i += 32) acc[i] = 0.0f;
  __syncthreads();

  const size_t row = size_t{kv.n_kv_heads} * d;
  const size_t v_offset = size_t{kv.page_size} * row;  // elements
  const int64_t valid = ValidTokens(a, w);
  for (int64_t s = warp; s < valid; s += kGenericWarps) {
    const int32_t e = w.begin + int32_t(s / kv.page_size);
    const uint32_t t = uint32_t(s % kv.page_size);
    const char* page =
        static_cast<const char*>(kv.pool) + size_t(kv.indices[e]) * kv.page_stride_bytes;
    const size_t k_at = t * row + size_t(w.kv_head) * d;
    for (uint32_t j = 0; j < group; ++j) {
      float partial = 0.0f;
      for (uint32_t c = lane; c < d; c += 32) {
        partial += q[j * d + c] * LoadAsFloat(page, kv.kv_type, k_at + c);
      }
      const float logit = WarpSum(partial);
      const float m_old = m[j];
      const float m_new = fmaxf(m_old, logit);
      const float rescale = expf(m_old - m_new);
      const float p = expf(logit - m_new);
      for (uint32_t c = lane; c < d; c += 32) {
        acc[j * d + c] =
            acc[j * d + c] * rescale + p * LoadAsFloat(page, kv.kv_type, v_offset + k_at + c);
      }
      __syncwarp();
      if (lane == 0) {
        m[j] = m_new;
        l[j] = l[j] * rescale + p;
      }
      __syncwarp();
    }
  }
  __syncthreads();
  WriteGenericState(a, w, group, n_partials, q + size_t{group} * d);
}

// ---- dispatch ---------------------------------------------------------------

using DecodeKernelFn = void (*)(DecodeAttentionArgs, const DecodeWorkItem*, uint32_t);

struct Launch {
  DecodeKernelFn kernel = nullptr;
  uint32_t threads = 0;
  size_t dynamic_shared = 0;
};

template <ScalarType KV, uint32_t D, uint32_t G>
Launch Specialised() {
  return {&PagedDecodeKernel<KV, D, G>, Shape<D, G>::kThreads, 0};
}

template <ScalarType KV, uint32_t D>
Launch ByGroup(uint32_t group) {
  switch (group) {
    case 1: return Specialised<KV, D, 1>();
    case 2: return Specialised<KV, D, 2>();
    case 3: return Specialised<KV, D, 3>();
    case 4: return Specialised<KV, D, 4>();
    case 8: return Specialised<KV, D, 8>();
    default: return {};
  }
}

template <ScalarType KV>
Launch ByHeadDim(uint32_t dim, uint32_t group) {
  switch (dim) {
    case 64: return ByGroup<KV, 64>(group);
    case 128: return ByGroup<KV, 128>(group);
    case 256: return ByGroup<KV, 256>(group);
    default: return {};
  }
}

bool Aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Dynamic shared memory the generic body may have on the current device.
// Above 48 KiB a kernel must opt in, which is done here once per device, up
// to the device's per-block limit.
absl::StatusOr<size_t> GenericSharedLimit() {
  int device = 0;
  if (absl::Status got = CudaStatus(cudaGetDevice(&device), "cudaGetDevice"); !got.ok()) {
    return got;
  }
  ABSL_CONST_INIT static absl::Mutex mu(absl::kConstInit);
  static auto* limits = new std::map<int, size_t>;  // never destroyed: used until exit
  absl::MutexLock lock(&mu);
  if (auto it = limits->find(device); it != limits->end()) return it->second;
  int optin = 0;
  if (absl::Status got = CudaStatus(
          cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
          "cudaDeviceGetAttribute(opt-in shared memory)");
      !got.ok()) {
    return got;
  }
  size_t limit = kMaxSharedBytes;
  if (static_cast<size_t>(optin) > kMaxSharedBytes) {
    if (absl::Status got = CudaStatus(
            cudaFuncSetAttribute(GenericDecodeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                 optin),
            "cudaFuncSetAttribute(generic decode shared memory)");
        !got.ok()) {
      return got;
    }
    limit = static_cast<size_t>(optin);
  }
  (*limits)[device] = limit;
  return limit;
}

// The body that runs `a`'s shape; kernel == nullptr when none can.
absl::StatusOr<Launch> Choose(const DecodeAttentionArgs& a) {
  const uint32_t group = a.n_q_heads / a.kv.n_kv_heads;
  const bool aligned = Aligned16(a.kv.pool) && a.kv.page_stride_bytes % 16 == 0;
  Launch l;
  if (aligned && a.kv.kv_type == ScalarType::kF16) {
    l = ByHeadDim<ScalarType::kF16>(a.kv.head_dim, group);
  } else if (aligned && a.kv.kv_type == ScalarType::kBF16) {
    l = ByHeadDim<ScalarType::kBF16>(a.kv.head_dim, group);
  }
  if (l.kernel != nullptr) return l;
  const size_t shared = GenericSharedBytes(group, a.kv.head_dim);
  if (shared > kMaxSharedBytes) {
    absl::StatusOr<size_t> limit = GenericSharedLimit();
    if (!limit.ok()) return limit.status();
    if (shared > *limit) return Launch{};
  }
  return Launch{&GenericDecodeKernel, kGenericWarps * 32, shared};
}

// DecodeAttentionCudaTargetCtas's answers: (device, kernel, threads,
// dynamic shared bytes) -> CTAs the device runs at once.
using TargetKey = std::tuple<int, const void*, uint32_t, size_t>;
struct TargetCache {
  absl::Mutex mu;
  std::map<TargetKey, uint32_t> ctas ABSL_GUARDED_BY(mu);
};
TargetCache& Targets() {
  static auto* cache = new TargetCache;  // never destroyed: used until exit
  return *cache;
}

absl::Status TooLarge() {
  return absl::UnimplementedError(
      "DecodeAttentionCuda: (n_q_heads / n_kv_heads) * head_dim too large for one block");
}

}  // namespace

absl::StatusOr<uint32_t> DecodeAttentionCudaTargetCtas(const DecodeAttentionArgs& args) {
  DecodeAttentionArgs a = args;
  a.num_splits = 1;
  a.workspace = nullptr;
  absl::Status st = a.Validate();
  if (!st.ok()) return st;
  const absl::StatusOr<Launch> chosen = Choose(a);
  if (!chosen.ok()) return chosen.status();
  const Launch l = *chosen;
  if (l.kernel == nullptr) return TooLarge();
  int device = 0;
  if (absl::Status got = CudaStatus(cudaGetDevice(&device), "cudaGetDevice"); !got.ok()) {
    return got;
  }
  // Planned every decode step: the occupancy query runs once per device and
  // kernel configuration.
  const TargetKey key{device, reinterpret_cast<const void*>(l.kernel), l.threads,
                      l.dynamic_shared};
  TargetCache& cache = Targets();
  {
    absl::MutexLock lock(&cache.mu);
    if (auto it = cache.ctas.find(key); it != cache.ctas.end()) return it->second;
  }
  int sms = 0, per_sm = 0;
  if (absl::Status got =
          CudaStatus(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device),
                     "cudaDeviceGetAttribute(SM count)");
      !got.ok()) {
    return got;
  }
  if (absl::Status got = CudaStatus(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
                                        &per_sm, l.kernel, static_cast<int>(l.threads),
                                        l.dynamic_shared),
                                    "decode attention occupancy");
      !got.ok()) {
    return got;
  }
  const auto ctas = static_cast<uint32_t>(std::max(1, sms) * std::max(1, per_sm));
  absl::MutexLock lock(&cache.mu);
  cache.ctas[key] = ctas;
  return ctas;
}

absl::Status DecodeAttentionCuda(const DecodeAttentionArgs& args, const DecodePlanView& plan,
                                 cudaStream_t stream) {
  DecodeAttentionArgs a = args;
  a.num_splits = 1;  // the plan cuts the lists; the workspace is the plan's
  absl::Status st = a.Validate();
  if (!st.ok() || a.batch == 0) return st;
  const uint32_t group = a.n_q_heads / a.kv.n_kv_heads;
  if (plan.n_items < a.batch * a.kv.n_kv_heads || plan.items == nullptr ||
      (plan.n_merges > 0 && plan.merges == nullptr)) {
    return absl::InvalidArgumentError(
        "DecodeAttentionCuda: the plan has fewer items than (sequence, KV head) pairs");
  }
  if (plan.n_partials > 0) {
    DecodePlan sizes;
    sizes.n_partials = plan.n_partials;
    if (a.workspace == nullptr || a.workspace_bytes < sizes.WorkspaceBytes(group, a.kv.head_dim)) {
      return absl::InvalidArgumentError(
          "DecodeAttentionCuda: the plan's partial states need a larger workspace");
    }
  }
  if (!Aligned16(a.out) || !Aligned16(a.workspace)) {
    return absl::InvalidArgumentError(
        "DecodeAttentionCuda: out and workspace must be 16-byte aligned");
  }
  const absl::StatusOr<Launch> chosen = Choose(a);
  if (!chosen.ok()) return chosen.status();
  const Launch l = *chosen;
  if (l.kernel == nullptr) return TooLarge();
  l.kernel<<<plan.n_items, l.threads, l.dynamic_shared, stream>>>(a, plan.items, plan.n_partials);
  absl::Status launched = LastLaunchStatus("DecodeAttentionCuda");
  if (!launched.ok()) return launched;
  return cuda_internal::LaunchPlanMerge(a, plan, stream);
}

}  // namespace kvtier::kernels
