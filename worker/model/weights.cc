#include "worker/model/weights.h"

#include <cmath>
#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"

namespace kvtier::model {

absl::Status ModelConfig::Validate() const {
  if (dim <= 0 || hidden_dim <= 0 || n_layers <= 0 || n_heads <= 0 ||
      n_kv_heads <= 0 || vocab_size <= 0 || max_positions <= 0 ||
      head_dim <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "model config needs positive sizes: dim=", dim, " hidden=", hidden_dim,
        " layers=", n_layers, " heads=", n_heads, " kv_heads=", n_kv_heads,
        " vocab=", vocab_size, " seq_len=", max_positions,
        " head_dim=", head_dim));
  }
  if (n_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "n_heads=", n_heads, " is not a multiple of n_kv_heads=", n_kv_heads));
  }
  if (rope_dim <= 0 || rope_dim > head_dim || rope_dim % 2 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rope_dim=", rope_dim, " must be even and in (0, head_dim=", head_dim,
        "]"));
  }
  if (!(rope_theta > 0.0f) || !(rms_eps > 0.0f) || !std::isfinite(rope_theta) ||
      !std::isfinite(rms_eps)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "rope_theta=", rope_theta, " and rms_eps=", rms_eps,
        " must be positive and finite"));
  }
  return absl::OkStatus();
}

AttentionShape ModelConfig::attention_shape() const {
  return AttentionShape{.n_layers = n_layers,
                        .n_heads = n_heads,
                        .n_kv_heads = n_kv_heads,
                        .head_dim = head_dim,
                        .max_positions = max_positions};
}

namespace {

// The size a tensor must have, and finite values: one NaN or infinity in a
// weight makes every logit NaN, which greedy decoding turns into the last
// token of the vocabulary without a word.
absl::Status CheckSize(absl::string_view name, const std::vector<float>& t,
                       size_t want) {
  if (t.size() != want) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tensor ", name, " has ", t.size(), " elements, want ", want));
  }
  // All exponent bits set: NaN or an infinity. One pass that vectorises.
  constexpr uint32_t kExponent = 0x7f800000u;
  uint32_t non_finite = 0;
  for (float x : t) {
    uint32_t bits;
    std::memcpy(&bits, &x, sizeof(bits));
    non_finite |= static_cast<uint32_t>((bits & kExponent) == kExponent);
  }
  if (non_finite != 0) {
    size_t i = 0;
    while (std::isfinite(t[i])) ++i;
    return absl::InvalidArgumentError(
        absl::StrCat("tensor ", name, " holds ", t[i], " at element ", i));
  }
  return absl::OkStatus();
}

}  // namespace

std::vector<float> ModelConfig::RopeFrequencies() const {
  std::vector<float> freq;
  for (int i = 0; i < rope_dim; i += 2) {
    freq.push_back(1.0f / std::pow(rope_theta, i / static_cast<float>(rope_dim)));
  }
  return freq;
}

absl::Status ModelWeights::Validate() const {
  const ModelConfig& c = config;
  RETURN_IF_ERROR(c.Validate());
  const size_t dim = c.dim, hidden = c.hidden_dim, kv = c.kv_dim();
  const size_t q = static_cast<size_t>(c.n_heads) * c.head_dim;
  RETURN_IF_ERROR(CheckSize("token_embedding", token_embedding,
                            static_cast<size_t>(c.vocab_size) * dim));
  if (layers.size() != static_cast<size_t>(c.n_layers)) {
    return absl::InvalidArgumentError(
        absl::StrCat(layers.size(), " layers, want ", c.n_layers));
  }
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerWeights& l = layers[i];
    const auto name = [i](absl::string_view tensor) {
      return absl::StrCat("layer ", i, " ", tensor);
    };
    RETURN_IF_ERROR(CheckSize(name("rms_att"), l.rms_att, dim));
    RETURN_IF_ERROR(CheckSize(name("wq"), l.wq, q * dim));
    RETURN_IF_ERROR(CheckSize(name("wk"), l.wk, kv * dim));
    RETURN_IF_ERROR(CheckSize(name("wv"), l.wv, kv * dim));
    RETURN_IF_ERROR(CheckSize(name("wo"), l.wo, dim * q));
    RETURN_IF_ERROR(CheckSize(name("rms_ffn"), l.rms_ffn, dim));
    RETURN_IF_ERROR(CheckSize(name("w_gate"), l.w_gate, hidden * dim));
    RETURN_IF_ERROR(CheckSize(name("w_down"), l.w_down, dim * hidden));
    RETURN_IF_ERROR(CheckSize(name("w_up"), l.w_up, hidden * dim));
  }
  RETURN_IF_ERROR(CheckSize("rms_final", rms_final, dim));
  if (!classifier.empty()) {
    RETURN_IF_ERROR(CheckSize("classifier", classifier,
                              static_cast<size_t>(c.vocab_size) * dim));
  }
  return absl::OkStatus();
}

}  // namespace kvtier::model
