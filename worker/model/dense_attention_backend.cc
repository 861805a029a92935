#include "worker/model/dense_attention_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier::model {

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

void DenseCausalAttention(const AttentionShape& shape, const float* q, int n,
                          const float* keys, const float* values, int n_past,
                          float* scores, float* out) {
  const int hd = shape.head_dim;
  const int q_dim = shape.q_dim();
  const int kv_dim = shape.kv_dim();
  const int group = shape.n_heads / shape.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // Rows in aligned blocks of kPrefillRowBlock positions, each over the
  // keys up to its last row: a row's arithmetic does not depend on n.
  for (int b0 = 0; b0 < n;) {
    const int b1 = std::min(n, b0 + kPrefillRowBlock - (n_past + b0) % kPrefillRowBlock);
    const int m = b1 - b0;
    const int total = n_past + b1;
    for (int h = 0; h < shape.n_heads; ++h) {
      const int kv_off = (h / group) * hd;
      // scores[i, t] = scale * q_i . k_t for all t; the causal part is used.
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, total, hd, scale,
                  q + static_cast<size_t>(b0) * q_dim + h * hd, q_dim, keys + kv_off, kv_dim,
                  0.0f, scores, total);
      for (int i = 0; i < m; ++i) {
        float* row = scores + static_cast<size_t>(i) * total;
        const int seen = n_past + b0 + i + 1;
        float max_score = -INFINITY;
        for (int t = 0; t < seen; ++t) max_score = std::max(max_score, row[t]);
        float sum = 0.0f;
        for (int t = 0; t < seen; ++t) {
          row[t] = std::exp(row[t] - max_score);
          sum += row[t];
        }
        for (int t = 0; t < seen; ++t) row[t] /= sum;
        for (int t = seen; t < total; ++t) row[t] = 0.0f;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, hd, total, 1.0f,
                  scores, total, values + kv_off, kv_dim, 0.0f,
                  out + static_cast<size_t>(b0) * q_dim + h * hd, q_dim);
    }
    b0 = b1;
  }
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
  const size_t need = static_cast<size_t>(n_tokens) * cache->length;
  if (scores_.size() < need) scores_.resize(need);
  DenseCausalAttention(shape_, q.data(), n_tokens, cache->k.data(),
                       cache->v.data(), pos0, scores_.data(), out.data());
  return absl::OkStatus();
}

}  // namespace kvtier::model
