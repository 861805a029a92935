#include "worker/model/dense_attention_backend.h"

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

}  // namespace kvtier::model
