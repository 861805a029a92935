#include "worker/model/dense_attention_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/model/blas_kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// glibc's libmvec (linked through libm): expf over 16 (AVX-512) or 8 (AVX2)
// lanes, the entry points GCC calls when it vectorises std::exp.
extern "C" __attribute__((target("avx512f"))) __m512 _ZGVeN16v_expf(__m512 x);
extern "C" __attribute__((target("avx2,fma"))) __m256 _ZGVdN8v_expf(__m256 x);
#endif

namespace kvtier::model {
namespace {

using ExpShiftFn = void (*)(float* row, int n, float shift);

// row[t] = exp(row[t] - shift) for t < n.
void ExpShiftScalar(float* row, int n, float shift) {
  for (int t = 0; t < n; ++t) row[t] = std::exp(row[t] - shift);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) void ExpShiftAvx512(float* row, int n, float shift) {
  const __m512 s = _mm512_set1_ps(shift);
  int t = 0;
  for (; t + 16 <= n; t += 16) {
    _mm512_storeu_ps(row + t, _ZGVeN16v_expf(_mm512_sub_ps(_mm512_loadu_ps(row + t), s)));
  }
  ExpShiftScalar(row + t, n - t, shift);
}

__attribute__((target("avx2,fma"))) void ExpShiftAvx2(float* row, int n, float shift) {
  const __m256 s = _mm256_set1_ps(shift);
  int t = 0;
  for (; t + 8 <= n; t += 8) {
    _mm256_storeu_ps(row + t, _ZGVdN8v_expf(_mm256_sub_ps(_mm256_loadu_ps(row + t), s)));
  }
  ExpShiftScalar(row + t, n - t, shift);
}
#endif

// The widest the CPU runs. An element's result depends only on the row's
// length and its place in it, so equal rows give equal results.
// The CPU's levels are those the BLAS kernels are chosen by.
ExpShiftFn ExpShift() {
  static const ExpShiftFn fn = [] {
#if defined(__x86_64__)
    const CpuVectorFeatures cpu = DetectCpuVectorFeatures();
    if (cpu.avx512) return &ExpShiftAvx512;
    if (cpu.avx2_fma) return &ExpShiftAvx2;
#endif
    return &ExpShiftScalar;
  }();
  return fn;
}

// row[0, seen) becomes the softmax of its scores and row[seen, total) zero.
// Maxima and sums run in kLanes interleaved partials (a fixed order, so the
// result depends only on the row), which the compiler keeps in vectors.
void SoftmaxPrefix(float* row, int seen, int total) {
  constexpr int kLanes = 8;
  float lane[kLanes];
  for (float& l : lane) l = -INFINITY;
  int t = 0;
  for (; t + kLanes <= seen; t += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] = std::max(lane[l], row[t + l]);
  }
  float max_score = -INFINITY;
  for (float l : lane) max_score = std::max(max_score, l);
  for (; t < seen; ++t) max_score = std::max(max_score, row[t]);
  ExpShift()(row, seen, max_score);
  for (float& l : lane) l = 0.0f;
  for (t = 0; t + kLanes <= seen; t += kLanes) {
    for (int l = 0; l < kLanes; ++l) lane[l] += row[t + l];
  }
  float sum = 0.0f;
  for (float l : lane) sum += l;
  for (; t < seen; ++t) sum += row[t];
  const float inv = 1.0f / sum;
  for (t = 0; t < seen; ++t) row[t] *= inv;
  for (t = seen; t < total; ++t) row[t] = 0.0f;
}

}  // namespace

void DenseAttention(const AttentionShape& shape, const float* q,
                    const float* keys, const float* values, int n_positions,
                    float* scores, float* out) {
  const int hd = shape.head_dim;
  const int kv_dim = shape.kv_dim();
  const int group = shape.n_heads / shape.n_kv_heads;
  const float scale = std::sqrt(static_cast<float>(hd));
  for (int h = 0; h < shape.n_heads; ++h) {
    const float* qh = q + h * hd;
    const int kv_off = (h / group) * hd;
    float max_score = -INFINITY;
    for (int t = 0; t < n_positions; ++t) {
      const float* kt = keys + static_cast<size_t>(t) * kv_dim + kv_off;
      float score = 0.0f;
      for (int i = 0; i < hd; ++i) score += qh[i] * kt[i];
      score /= scale;
      scores[t] = score;
      if (score > max_score) max_score = score;
    }
    float sum = 0.0f;
    for (int t = 0; t < n_positions; ++t) {
      scores[t] = std::exp(scores[t] - max_score);
      sum += scores[t];
    }
    for (int t = 0; t < n_positions; ++t) scores[t] /= sum;
    float* oh = out + h * hd;
    for (int i = 0; i < hd; ++i) oh[i] = 0.0f;
    for (int t = 0; t < n_positions; ++t) {
      const float* vt = values + static_cast<size_t>(t) * kv_dim + kv_off;
      const float a = scores[t];
      for (int i = 0; i < hd; ++i) oh[i] += a * vt[i];
    }
  }
}

namespace {

// Rows [b0, b0 + m) of q, a row block, over the keys up to its last row,
// for the query heads of KV head g: both products go through BLAS for the
// group's heads together, so the block reads (and BLAS packs) every key
// and value once, not per head.
void AttendRowBlock(const AttentionShape& shape, const float* q, int b0, int m,
                    const float* keys, const float* values, int n_past, int g, float* out) {
  const int hd = shape.head_dim;
  const int q_dim = shape.q_dim();
  const int kv_dim = shape.kv_dim();
  const int group = shape.n_heads / shape.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const size_t row_bytes = sizeof(float) * hd;
  const int total = n_past + b0 + m;
  const size_t rows = static_cast<size_t>(group) * m;  // row j * m + i: head j, query i
  // Each pool thread keeps its own, grown to the largest block it ran.
  thread_local std::vector<float> scratch;
  const size_t need = rows * (2 * hd + total);
  if (scratch.size() < need) scratch.resize(need);
  float* group_q = scratch.data();
  float* group_out = group_q + rows * hd;
  float* scores = group_out + rows * hd;
  for (int j = 0; j < group; ++j) {
    for (int i = 0; i < m; ++i) {
      std::memcpy(group_q + (static_cast<size_t>(j) * m + i) * hd,
                  q + static_cast<size_t>(b0 + i) * q_dim + (g * group + j) * hd, row_bytes);
    }
  }
  // scores[r, t] = scale * q_r . k_t for all t; the causal part is used.
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), total, hd, scale,
              group_q, hd, keys + g * hd, kv_dim, 0.0f, scores, total);
  for (size_t r = 0; r < rows; ++r) {
    SoftmaxPrefix(scores + r * total, n_past + b0 + static_cast<int>(r % m) + 1, total);
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), hd, total, 1.0f,
              scores, total, values + g * hd, kv_dim, 0.0f, group_out, hd);
  for (int j = 0; j < group; ++j) {
    for (int i = 0; i < m; ++i) {
      std::memcpy(out + static_cast<size_t>(b0 + i) * q_dim + (g * group + j) * hd,
                  group_out + (static_cast<size_t>(j) * m + i) * hd, row_bytes);
    }
  }
}

}  // namespace

void DenseCausalAttention(const AttentionShape& shape, const float* q, int n,
                          const float* keys, const float* values, int n_past, float* out) {
  // Rows in aligned blocks of kPrefillRowBlock positions, each over the
  // keys up to its last row: a row's arithmetic depends neither on n nor on
  // the thread that computes it. One task per (block, KV head).
  const std::vector<PrefillRowBlock> blocks = PrefillRowBlocks(n, n_past);
  const auto heads = static_cast<size_t>(shape.n_kv_heads);
  ParallelBlasFor(blocks.size() * heads, [&](size_t i) {
    const PrefillRowBlock& b = blocks[i / heads];
    AttendRowBlock(shape, q, b.begin, b.rows, keys, values, n_past, static_cast<int>(i % heads),
                   out);
  });
}

absl::StatusOr<std::unique_ptr<DenseAttentionBackend>>
DenseAttentionBackend::Create(const AttentionShape& shape,
                              const DenseAttentionOptions& options) {
  RETURN_IF_ERROR(shape.Validate());
  if (options.max_sequences <= 0 || options.max_positions < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dense attention options: max_sequences=", options.max_sequences,
        " must be > 0, max_positions=", options.max_positions,
        " must be >= 0"));
  }
  const int max_positions = options.max_positions > 0 ? options.max_positions
                                                      : shape.max_positions;
  return std::unique_ptr<DenseAttentionBackend>(
      new DenseAttentionBackend(shape, options.max_sequences, max_positions));
}

DenseAttentionBackend::DenseAttentionBackend(const AttentionShape& shape,
                                             int max_sequences,
                                             int max_positions)
    : shape_(shape),
      max_sequences_(max_sequences),
      max_positions_(max_positions),
      scores_(max_positions) {}

absl::Status DenseAttentionBackend::StartSequence(SequenceId seq) {
  if (sequences_.contains(seq)) {
    return absl::AlreadyExistsError(absl::StrCat("sequence ", seq, " is live"));
  }
  if (static_cast<int>(sequences_.size()) >= max_sequences_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "dense attention holds its maximum of ", max_sequences_,
        " sequences"));
  }
  sequences_.emplace(seq, SequenceCache(shape_.n_layers));
  return absl::OkStatus();
}

absl::Status DenseAttentionBackend::EndSequence(SequenceId seq) {
  if (sequences_.erase(seq) == 0) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  return absl::OkStatus();
}

absl::StatusOr<DenseAttentionBackend::LayerCache*> DenseAttentionBackend::Find(
    SequenceId seq, int layer) {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  if (layer < 0 || layer >= shape_.n_layers) {
    return absl::InvalidArgumentError(
        absl::StrCat("layer ", layer, " outside [0, ", shape_.n_layers, ")"));
  }
  return &it->second[layer];
}

absl::StatusOr<int> DenseAttentionBackend::Length(SequenceId seq,
                                                  int layer) const {
  auto it = sequences_.find(seq);
  if (it == sequences_.end()) {
    return absl::NotFoundError(absl::StrCat("sequence ", seq, " is not live"));
  }
  if (layer < 0 || layer >= shape_.n_layers) {
    return absl::InvalidArgumentError(absl::StrCat("bad layer ", layer));
  }
  return it->second[layer].length;
}

absl::Status DenseAttentionBackend::Append(SequenceId seq, int layer, int pos,
                                           absl::Span<const float> k,
                                           absl::Span<const float> v) {
  ASSIGN_OR_RETURN(LayerCache * cache, Find(seq, layer));
  const size_t kv_dim = shape_.kv_dim();
  if (k.size() != kv_dim || v.size() != kv_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "k/v of ", k.size(), "/", v.size(), " floats, want ", kv_dim));
  }
  if (pos != cache->length) {
    return absl::InvalidArgumentError(
        absl::StrCat("append at position ", pos, " but layer ", layer,
                     " of sequence ", seq, " holds ", cache->length));
  }
  if (pos >= max_positions_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "position ", pos, " exceeds the dense cache of ", max_positions_));
  }
  cache->k.insert(cache->k.end(), k.begin(), k.end());
  cache->v.insert(cache->v.end(), v.begin(), v.end());
  ++cache->length;
  return absl::OkStatus();
}

absl::Status DenseAttentionBackend::Attend(SequenceId seq, int layer,
                                           absl::Span<const float> q,
                                           absl::Span<float> out) {
  ASSIGN_OR_RETURN(LayerCache * cache, Find(seq, layer));
  if (q.size() != static_cast<size_t>(shape_.q_dim()) ||
      out.size() != q.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "q/out of ", q.size(), "/", out.size(), " floats, want ",
        shape_.q_dim()));
  }
  if (cache->length == 0) {
    return absl::FailedPreconditionError("attend before any append");
  }
  DenseAttention(shape_, q.data(), cache->k.data(), cache->v.data(),
                 cache->length, scores_.data(), out.data());
  return absl::OkStatus();
}

absl::Status DenseAttentionBackend::AppendAndAttendBatch(
    SequenceId seq, int layer, int pos0, int n_tokens,
    absl::Span<const float> k, absl::Span<const float> v,
    absl::Span<const float> q, absl::Span<float> out) {
  ASSIGN_OR_RETURN(LayerCache * cache, Find(seq, layer));
  const size_t kv_dim = shape_.kv_dim();
  const size_t q_dim = shape_.q_dim();
  if (n_tokens <= 0 || k.size() != kv_dim * n_tokens || v.size() != k.size() ||
      q.size() != q_dim * n_tokens || out.size() != q.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", n_tokens, " tokens has mismatched spans"));
  }
  if (pos0 != cache->length) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch at position ", pos0, " but layer ", layer,
                     " of sequence ", seq, " holds ", cache->length));
  }
  if (pos0 + n_tokens > max_positions_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "positions up to ", pos0 + n_tokens, " exceed the dense cache of ",
        max_positions_));
  }
  cache->k.insert(cache->k.end(), k.begin(), k.end());
  cache->v.insert(cache->v.end(), v.begin(), v.end());
  cache->length += n_tokens;
  DenseCausalAttention(shape_, q.data(), n_tokens, cache->k.data(),
                       cache->v.data(), pos0, out.data());
  return absl::OkStatus();
}

}  // namespace kvtier::model
