#include "kernels/decode_attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu/internal.h"

namespace kvtier::kernels {
namespace {

constexpr char kWhat[] = "DecodeAttention";
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Online-softmax state of the G query heads of one KV head over one run of
// list entries.
struct GroupState {
  GroupState(uint32_t group, uint32_t page_size, uint32_t head_dim)
      : m(group, kNegInf),
        l(group, 0.0f),
        acc(size_t{group} * head_dim, 0.0f),
        q(size_t{group} * head_dim),
        p(page_size) {}
  std::vector<float> m, l, acc, q, p;
};

// KV heads [g0, g1) of sequence b over run `split` of their list. With a
// shared list a task takes every KV head, so each page is read from memory
// once, as one contiguous block; with per-head lists it takes one head.
struct Task {
  uint32_t b, g0, g1, split;
};

// A page's K and V in fp32: row t of KV head g at
// k + t * row_stride + (g - first_head) * d (and likewise v).
struct PageRows {
  const float* k;
  const float* v;
  size_t row_stride;
  uint32_t first_head;
};

// Converts the first `tokens` tokens of a page to fp32: every KV head when
// g1 - g0 > 1 (one sequential pass over the page), else only head g0's rows.
PageRows LoadPage(const DecodeAttentionArgs& a, const char* page, uint32_t g0, uint32_t g1,
                  uint32_t tokens, std::vector<float>& buf) {
  const size_t d = a.kv.head_dim;
  const size_t row = size_t{a.kv.n_kv_heads} * d;
  const size_t tensor = size_t{a.kv.page_size} * row;
  if (g1 - g0 > 1) {
    buf.resize(2 * tensor);
    internal::ToFloat(page, a.kv.kv_type, 0, tokens * row, buf.data());
    internal::ToFloat(page, a.kv.kv_type, tensor, tokens * row, buf.data() + tensor);
    return {buf.data(), buf.data() + tensor, row, 0};
  }
  buf.resize(2 * size_t{a.kv.page_size} * d);
  float* k = buf.data();
  float* v = k + size_t{a.kv.page_size} * d;
  for (uint32_t t = 0; t < tokens; ++t) {
    internal::ToFloat(page, a.kv.kv_type, t * row + g0 * d, d, k + t * d);
    internal::ToFloat(page, a.kv.kv_type, tensor + t * row + g0 * d, d, v + t * d);
  }
  return {k, v, d, g0};
}

KVTIER_KERNELS_MULTIVERSION void AttendPage(const DecodeAttentionArgs& a, uint32_t g,
                                            const PageRows& rows, uint32_t tokens, GroupState& st) {
  const size_t d = a.kv.head_dim;
  const uint32_t group = a.n_q_heads / a.kv.n_kv_heads;
  const float* k = rows.k + (g - rows.first_head) * d;
  const float* v = rows.v + (g - rows.first_head) * d;
  for (uint32_t j = 0; j < group; ++j) {
    const float* q = st.q.data() + j * d;
    float page_max = kNegInf;
    for (uint32_t t = 0; t < tokens; ++t) {
      st.p[t] = internal::Dot(q, k + t * rows.row_stride, d);
      page_max = page_max < st.p[t] ? st.p[t] : page_max;
    }
    const float m_new = st.m[j] < page_max ? page_max : st.m[j];
    const float rescale = std::exp(st.m[j] - m_new);  // 0 while m was -inf
    float* acc = st.acc.data() + j * d;
    for (size_t c = 0; c < d; ++c) acc[c] *= rescale;
    float sum = 0.0f;
    for (uint32_t t = 0; t < tokens; ++t) {
      const float w = std::exp(st.p[t] - m_new);
      sum += w;
      const float* vt = v + t * rows.row_stride;
      for (size_t c = 0; c < d; ++c) acc[c] += w * vt[c];
    }
    st.l[j] = st.l[j] * rescale + sum;
    st.m[j] = m_new;
  }
}

void StartHead(const DecodeAttentionArgs& a, uint32_t b, uint32_t g, GroupState& st) {
  const size_t d = a.kv.head_dim;
  const uint32_t group = a.n_q_heads / a.kv.n_kv_heads;
  const size_t q_first = (size_t{b} * a.n_q_heads + size_t{g} * group) * d;
  internal::ToFloat(a.queries, a.query_type, q_first, size_t{group} * d, st.q.data());
  for (float& x : st.q) x *= a.sm_scale;
  std::fill(st.m.begin(), st.m.end(), kNegInf);
  std::fill(st.l.begin(), st.l.end(), 0.0f);
  std::fill(st.acc.begin(), st.acc.end(), 0.0f);
}

// Writes the normalised state of head g's query heads to out/lse, or to the
// split's slot of the workspace.
void FinishHead(const DecodeAttentionArgs& a, uint32_t b, uint32_t g, uint32_t split,
                const GroupState& st) {
  const size_t d = a.kv.head_dim;
  const uint32_t group = a.n_q_heads / a.kv.n_kv_heads;
  for (uint32_t j = 0; j < group; ++j) {
    const size_t row = size_t{b} * a.n_q_heads + size_t{g} * group + j;
    float* out;
    float* lse;
    if (a.num_splits == 1) {
      out = a.out + row * d;
      lse = a.lse + row;
    } else {
      float* ws = static_cast<float*>(a.workspace);
      const size_t state = row * a.num_splits + split;
      out = ws + state * d;
      lse = ws + size_t{a.batch} * a.n_q_heads * a.num_splits * d + state;
    }
    const float* acc = st.acc.data() + j * d;
    if (st.l[j] > 0.0f) {
      const float inv = 1.0f / st.l[j];
      for (size_t c = 0; c < d; ++c) out[c] = acc[c] * inv;
      *lse = st.m[j] + std::log(st.l[j]);
    } else {
      std::fill_n(out, d, 0.0f);
      *lse = kNegInf;
    }
  }
}

void RunTask(const DecodeAttentionArgs& a, const Task& task, std::vector<GroupState>& st,
             std::vector<float>& page_buf) {
  const PagedKv& kv = a.kv;
  const uint32_t list = task.b * kv.n_lists() + (kv.per_head_lists ? task.g0 : 0);
  const int32_t list_begin = kv.indptr[list];
  const int32_t list_end = kv.indptr[list + 1];
  const int32_t chunk = (list_end - list_begin + static_cast<int32_t>(a.num_splits) - 1) /
                        static_cast<int32_t>(a.num_splits);
  const int32_t e0 = std::min(list_end, list_begin + chunk * static_cast<int32_t>(task.split));
  const int32_t e1 = std::min(list_end, e0 + chunk);
  for (uint32_t g = task.g0; g < task.g1; ++g) StartHead(a, task.b, g, st[g - task.g0]);
  for (int32_t e = e0; e < e1; ++e) {
    const char* page = static_cast<const char*>(kv.pool) +
                       static_cast<size_t>(kv.indices[e]) * kv.page_stride_bytes;
    const uint32_t tokens =
        e == list_end - 1 ? static_cast<uint32_t>(kv.last_page_len[task.b]) : kv.page_size;
    const PageRows rows = LoadPage(a, page, task.g0, task.g1, tokens, page_buf);
    for (uint32_t g = task.g0; g < task.g1; ++g) {
      AttendPage(a, g, rows, tokens, st[g - task.g0]);
    }
  }
  for (uint32_t g = task.g0; g < task.g1; ++g) {
    FinishHead(a, task.b, g, task.split, st[g - task.g0]);
  }
}

}  // namespace

size_t DecodeAttentionWorkspaceBytes(uint32_t batch, uint32_t n_q_heads, uint32_t head_dim,
                                     uint32_t num_splits) {
  if (num_splits <= 1) return 0;
  return size_t{batch} * n_q_heads * num_splits * (size_t{head_dim} + 1) * sizeof(float);
}

absl::Status DecodeAttentionArgs::Validate() const {
  using internal::CheckNotNull;
  using internal::CheckRange;
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckFloatType(kWhat, "query_type", query_type));
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckFloatType(kWhat, "kv.kv_type", kv.kv_type));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "kv.page_size", kv.page_size, 1, internal::kMaxPageSize));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "kv.n_kv_heads", kv.n_kv_heads, 1, internal::kMaxKvHeads));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "kv.head_dim", kv.head_dim, 1, internal::kMaxHeadDim));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "n_q_heads", n_q_heads, kv.n_kv_heads, 64u * internal::kMaxKvHeads));
  if (n_q_heads % kv.n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        "DecodeAttention: n_q_heads must be a multiple of kv.n_kv_heads");
  }
  if (!(sm_scale > 0.0f) || !std::isfinite(sm_scale)) {
    return absl::InvalidArgumentError("DecodeAttention: sm_scale must be finite and > 0");
  }
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "num_splits", num_splits, 1, kMaxSplits));
  const size_t page_bytes =
      2 * size_t{kv.page_size} * kv.n_kv_heads * kv.head_dim * ScalarBytes(kv.kv_type);
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "kv.page_stride_bytes", kv.page_stride_bytes,
                                            page_bytes, std::numeric_limits<uint64_t>::max()));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "kv.total_entries", kv.total_entries, 0, INT32_MAX));
  if (batch == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "queries", queries));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "kv.indptr", kv.indptr));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "kv.last_page_len", kv.last_page_len));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "out", out));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "lse", lse));
  if (workspace != nullptr) {
    KVTIER_KERNELS_RETURN_IF_ERROR(
        CheckRange(kWhat, "workspace_bytes", workspace_bytes,
                   DecodeAttentionWorkspaceBytes(batch, n_q_heads, kv.head_dim, num_splits),
                   std::numeric_limits<uint64_t>::max()));
  }
  if (kv.total_entries == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "kv.pool", kv.pool));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "kv.indices", kv.indices));
  return CheckRange(kWhat, "kv.pool_pages", kv.pool_pages, 1, INT32_MAX);
}

absl::Status DecodeAttentionArgs::ValidateHostArrays() const {
  KVTIER_KERNELS_RETURN_IF_ERROR(Validate());
  if (batch == 0) return absl::OkStatus();
  const size_t n_lists = size_t{batch} * kv.n_lists();
  KVTIER_KERNELS_RETURN_IF_ERROR(
      internal::CheckIndptr(kWhat, "kv.indptr", kv.indptr, n_lists, kv.total_entries));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      internal::CheckIds(kWhat, "kv.indices", kv.indices, kv.total_entries, kv.pool_pages));
  for (uint32_t b = 0; b < batch; ++b) {
    const size_t first = size_t{b} * kv.n_lists();
    if (kv.indptr[first + kv.n_lists()] == kv.indptr[first]) continue;  // no pages
    KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckRange(
        kWhat, "kv.last_page_len[b]", static_cast<uint64_t>(std::max(0, kv.last_page_len[b])), 1,
        kv.page_size));
  }
  return absl::OkStatus();
}

absl::Status DecodeAttentionCpu(const DecodeAttentionArgs& args, ThreadPool* pool) {
  KVTIER_KERNELS_RETURN_IF_ERROR(args.ValidateHostArrays());
  if (args.batch == 0) return absl::OkStatus();
  DecodeAttentionArgs a = args;
  std::vector<float> own_workspace;
  if (a.num_splits > 1 && a.workspace == nullptr) {
    a.workspace_bytes =
        DecodeAttentionWorkspaceBytes(a.batch, a.n_q_heads, a.kv.head_dim, a.num_splits);
    own_workspace.resize(a.workspace_bytes / sizeof(float));
    a.workspace = own_workspace.data();
  }
  const uint32_t group = a.n_q_heads / a.kv.n_kv_heads;
  const uint32_t head_tasks = a.kv.per_head_lists ? a.kv.n_kv_heads : 1u;
  const uint32_t heads_per_task = a.kv.n_kv_heads / head_tasks;
  const size_t tasks = size_t{a.batch} * head_tasks * a.num_splits;
  internal::ParallelChunks(pool, tasks, 1, [&](size_t begin, size_t end) {
    std::vector<GroupState> st(heads_per_task, GroupState(group, a.kv.page_size, a.kv.head_dim));
    std::vector<float> page_buf;
    for (size_t i = begin; i < end; ++i) {
      const uint32_t split = static_cast<uint32_t>(i % a.num_splits);
      const size_t bh = i / a.num_splits;
      const uint32_t b = static_cast<uint32_t>(bh / head_tasks);
      const uint32_t g0 = static_cast<uint32_t>(bh % head_tasks) * heads_per_task;
      RunTask(a, Task{b, g0, g0 + heads_per_task, split}, st, page_buf);
    }
  });
  if (a.num_splits == 1) return absl::OkStatus();
  const float* ws = static_cast<const float*>(a.workspace);
  MergeStatesArgs merge;
  merge.n_rows = a.batch * a.n_q_heads;
  merge.n_states = a.num_splits;
  merge.head_dim = a.kv.head_dim;
  merge.states_out = ws;
  merge.states_lse = ws + size_t{merge.n_rows} * a.num_splits * a.kv.head_dim;
  merge.out = a.out;
  merge.lse = a.lse;
  return MergeAttentionStatesCpu(merge, pool);
}

}  // namespace kvtier::kernels
