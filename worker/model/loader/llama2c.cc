#include "worker/model/loader/llama2c.h"

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"

namespace kvtier::model {
namespace {

constexpr size_t kHeaderBytes = 7 * sizeof(int32_t);
// Sizes this loader accepts: far above any model it is meant for, low
// enough that size arithmetic cannot overflow.
constexpr int32_t kMaxSize = 1 << 20;

absl::StatusOr<ModelConfig> ParseHeader(const std::string& path,
                                        absl::Span<const uint8_t> bytes,
                                        bool* shared_classifier) {
  if (bytes.size() < kHeaderBytes) {
    return absl::DataLossError(absl::StrCat(
        path, ": llama2.c checkpoint truncated: ", bytes.size(),
        " bytes, the header alone takes ", kHeaderBytes));
  }
  int32_t h[7];
  std::memcpy(h, bytes.data(), kHeaderBytes);
  for (int i = 0; i < 7; ++i) {
    if (h[i] == 0 || std::abs(static_cast<int64_t>(h[i])) > kMaxSize ||
        (i != 5 && h[i] < 0)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": not a llama2.c checkpoint: header field ", i, " is ", h[i]));
    }
  }
  *shared_classifier = h[5] > 0;
  ModelConfig c;
  c.dim = h[0];
  c.hidden_dim = h[1];
  c.n_layers = h[2];
  c.n_heads = h[3];
  c.n_kv_heads = h[4];
  c.vocab_size = std::abs(h[5]);
  c.max_positions = h[6];
  if (c.dim % c.n_heads != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": dim ", c.dim, " is not a multiple of n_heads ", c.n_heads));
  }
  c.head_dim = c.dim / c.n_heads;
  c.rope_dim = c.head_dim;
  c.rope_theta = 10000.0f;
  c.rms_eps = 1e-5f;
  if (c.head_dim % 2 != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": head_dim ", c.head_dim, " is odd"));
  }
  absl::Status valid = c.Validate();
  if (!valid.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", valid.message()));
  }
  return c;
}

}  // namespace

absl::StatusOr<ModelWeights> LoadLlama2cCheckpoint(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  const absl::Span<const uint8_t> bytes = file->bytes();
  bool shared = true;
  ASSIGN_OR_RETURN(ModelConfig c, ParseHeader(path, bytes, &shared));

  const uint64_t dim = c.dim, hidden = c.hidden_dim, layers = c.n_layers;
  const uint64_t kv = c.kv_dim(), vocab = c.vocab_size;
  // Each field passed its own bound, but their products can pass 2^64 (a
  // header that wraps would match a small file): the size in 128 bits.
  using Wide = unsigned __int128;
  const Wide wide_floats =
      Wide{vocab} * dim +
      Wide{layers} * (Wide{dim} + Wide{dim} * dim + Wide{2} * kv * dim + Wide{dim} * dim + dim +
                      Wide{3} * hidden * dim) +
      dim + Wide{static_cast<uint64_t>(c.max_positions)} * c.head_dim +
      (shared ? 0 : Wide{vocab} * dim);
  const Wide wide_want = kHeaderBytes + wide_floats * sizeof(float);
  if (wide_want > bytes.size() && wide_want > Wide{UINT64_MAX}) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": llama2.c header implies more than 2^64 bytes of weights (dim ", dim,
        ", hidden_dim ", hidden, ", layers ", layers, ", vocab ", vocab, ")"));
  }
  const uint64_t want = static_cast<uint64_t>(wide_want);
  if (bytes.size() < want) {
    return absl::DataLossError(absl::StrCat(
        path, ": llama2.c checkpoint truncated: ", bytes.size(),
        " bytes, the header implies ", want));
  }
  if (bytes.size() > want) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", bytes.size() - want,
        " bytes beyond what the header implies (", want,
        "); not a legacy llama2.c checkpoint?"));
  }

  size_t pos = kHeaderBytes;
  auto take = [&](uint64_t n) {
    std::vector<float> out(n);
    std::memcpy(out.data(), bytes.data() + pos, n * sizeof(float));
    pos += n * sizeof(float);
    return out;
  };
  ModelWeights w;
  w.config = c;
  w.token_embedding = take(vocab * dim);
  w.layers.resize(layers);
  // llama2.c stores each tensor kind for all layers contiguously.
  for (auto& l : w.layers) l.rms_att = take(dim);
  for (auto& l : w.layers) l.wq = take(dim * dim);
  for (auto& l : w.layers) l.wk = take(kv * dim);
  for (auto& l : w.layers) l.wv = take(kv * dim);
  for (auto& l : w.layers) l.wo = take(dim * dim);
  for (auto& l : w.layers) l.rms_ffn = take(dim);
  for (auto& l : w.layers) l.w_gate = take(hidden * dim);
  for (auto& l : w.layers) l.w_down = take(dim * hidden);
  for (auto& l : w.layers) l.w_up = take(hidden * dim);
  w.rms_final = take(dim);
  pos += static_cast<size_t>(c.max_positions) * c.head_dim * sizeof(float);
  if (!shared) w.classifier = take(vocab * dim);
  RETURN_IF_ERROR(w.Validate());
  return w;
}

}  // namespace kvtier::model
