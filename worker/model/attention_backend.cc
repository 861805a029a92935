#include "worker/model/attention_backend.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier::model {

absl::Status AttentionShape::Validate() const {
  if (n_layers <= 0 || n_heads <= 0 || n_kv_heads <= 0 || head_dim <= 0 ||
      max_positions <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention shape needs positive sizes: layers=", n_layers,
        " heads=", n_heads, " kv_heads=", n_kv_heads, " head_dim=", head_dim,
        " max_positions=", max_positions));
  }
  if (n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("n_heads=", n_heads,
                     " is not a multiple of n_kv_heads=", n_kv_heads));
  }
  return absl::OkStatus();
}

std::vector<PrefillRowBlock> PrefillRowBlocks(int n, int pos0) {
  std::vector<PrefillRowBlock> blocks;
  for (int b0 = 0; b0 < n;) {
    const int b1 = std::min(n, b0 + kPrefillRowBlock - (pos0 + b0) % kPrefillRowBlock);
    blocks.push_back({b0, b1 - b0});
    b0 = b1;
  }
  return blocks;
}

absl::Status AttentionBackend::AppendAndAttendBatch(
    SequenceId seq, int layer, int pos0, int n_tokens,
    absl::Span<const float> k, absl::Span<const float> v,
    absl::Span<const float> q, absl::Span<float> out) {
  const size_t kv_dim = shape().kv_dim();
  const size_t q_dim = shape().q_dim();
  if (n_tokens < 0 || k.size() != kv_dim * n_tokens ||
      v.size() != kv_dim * n_tokens || q.size() != q_dim * n_tokens ||
      out.size() != q_dim * n_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", n_tokens, " tokens has mismatched spans"));
  }
  for (int i = 0; i < n_tokens; ++i) {
    RETURN_IF_ERROR(Append(seq, layer, pos0 + i, k.subspan(i * kv_dim, kv_dim),
                           v.subspan(i * kv_dim, kv_dim)));
    RETURN_IF_ERROR(Attend(seq, layer, q.subspan(i * q_dim, q_dim),
                           out.subspan(i * q_dim, q_dim)));
  }
  return absl::OkStatus();
}

}  // namespace kvtier::model
