#include "worker/model/transformer.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier::model {

absl::StatusOr<std::unique_ptr<Transformer>> Transformer::Create(
    const ModelWeights* weights, AttentionBackend* backend,
    const TransformerOptions& options) {
  if (weights == nullptr || backend == nullptr) {
    return absl::InvalidArgumentError("transformer needs weights and backend");
  }
  RETURN_IF_ERROR(weights->Validate());
  if (options.max_batch_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "max_batch_tokens ", options.max_batch_tokens, " must be positive"));
  }
  const AttentionShape want = weights->config.attention_shape();
  const AttentionShape& got = backend->shape();
  if (got.n_layers != want.n_layers || got.n_heads != want.n_heads ||
      got.n_kv_heads != want.n_kv_heads || got.head_dim != want.head_dim) {
    return absl::InvalidArgumentError(absl::StrCat(
        "attention backend shape (layers ", got.n_layers, ", heads ",
        got.n_heads, "/", got.n_kv_heads, ", head_dim ", got.head_dim,
        ") differs from the model's"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<DenseLayers> dense,
                   CreateDenseLayers(options.device, *weights, options.max_batch_tokens));
  return std::unique_ptr<Transformer>(
      new Transformer(*weights, backend, std::move(dense), options.max_batch_tokens));
}

Transformer::Transformer(const ModelWeights& weights, AttentionBackend* backend,
                         std::unique_ptr<DenseLayers> dense, int max_batch_tokens)
    : weights_(weights),
      backend_(backend),
      dense_(std::move(dense)),
      max_batch_(max_batch_tokens) {
  const ModelConfig& c = weights_.config;
  const size_t b = max_batch_;
  const size_t q_dim = static_cast<size_t>(c.n_heads) * c.head_dim;
  q_.resize(b * q_dim);
  k_.resize(b * c.kv_dim());
  v_.resize(b * c.kv_dim());
  att_.resize(b * q_dim);
}

absl::Status Transformer::CheckToken(int token) const {
  if (token < 0 || token >= weights_.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "token ", token, " outside the vocabulary of ",
        weights_.config.vocab_size));
  }
  return absl::OkStatus();
}

absl::Status Transformer::RunLayer(SequenceId seq, int layer, int n, int pos0) {
  const ModelConfig& c = weights_.config;
  RETURN_IF_ERROR(dense_->AttentionInputs(layer, n, pos0, q_.data(), k_.data(), v_.data()));
  const size_t nq = static_cast<size_t>(n) * c.n_heads * c.head_dim;
  const size_t nkv = static_cast<size_t>(n) * c.kv_dim();
  if (n == 1) {
    RETURN_IF_ERROR(backend_->Append(seq, layer, pos0, {k_.data(), nkv}, {v_.data(), nkv}));
    RETURN_IF_ERROR(backend_->Attend(seq, layer, {q_.data(), nq}, {att_.data(), nq}));
  } else {
    RETURN_IF_ERROR(backend_->AppendAndAttendBatch(seq, layer, pos0, n, {k_.data(), nkv},
                                                   {v_.data(), nkv}, {q_.data(), nq},
                                                   {att_.data(), nq}));
  }
  return dense_->FinishLayer(layer, n, pos0, att_.data());
}

absl::Status Transformer::RunLayers(SequenceId seq, int n, int pos0) {
  for (int l = 0; l < weights_.config.n_layers; ++l) {
    RETURN_IF_ERROR(RunLayer(seq, l, n, pos0));
  }
  return absl::OkStatus();
}

absl::StatusOr<absl::Span<const float>> Transformer::Forward(SequenceId seq,
                                                             int token,
                                                             int pos) {
  RETURN_IF_ERROR(CheckToken(token));
  RETURN_IF_ERROR(backend_->AppendTokens(seq, pos, {&token, 1}));
  RETURN_IF_ERROR(dense_->Embed({&token, 1}));
  RETURN_IF_ERROR(RunLayers(seq, 1, pos));
  return dense_->Logits(0);
}

absl::StatusOr<absl::Span<const float>> Transformer::Prefill(
    SequenceId seq, absl::Span<const int> tokens, int pos0) {
  if (tokens.empty()) {
    return absl::InvalidArgumentError("prefill of no tokens");
  }
  for (int t : tokens) RETURN_IF_ERROR(CheckToken(t));
  int n = 0;
  for (size_t start = 0; start < tokens.size(); start += n) {
    n = std::min<size_t>(max_batch_, tokens.size() - start);
    RETURN_IF_ERROR(
        backend_->AppendTokens(seq, pos0 + start, tokens.subspan(start, n)));
    RETURN_IF_ERROR(dense_->Embed(tokens.subspan(start, n)));
    RETURN_IF_ERROR(RunLayers(seq, n, pos0 + start));
  }
  RETURN_IF_ERROR(backend_->EndPrefill(seq));
  return dense_->Logits(n - 1);
}

}  // namespace kvtier::model
