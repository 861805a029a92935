// Loader of llama2.c's "legacy" checkpoint format (version 0, run.c).
//
// Header: seven little-endian int32 (dim, hidden_dim, n_layers, n_heads,
// n_kv_heads, vocab_size, seq_len; a negative vocab_size means a separate
// classifier follows), then fp32 arrays: token_embedding, rms_att, wq, wk,
// wv, wo, rms_ffn, w1, w2, w3, rms_final, freq_cis_real, freq_cis_imag
// (skipped), and wcls when not shared.
//
// The file size must be exactly what the header implies: shorter is
// DATA_LOSS (truncated), longer or an impossible header is INVALID_ARGUMENT.
#ifndef KVTIER_WORKER_MODEL_LOADER_LLAMA2C_H_
#define KVTIER_WORKER_MODEL_LOADER_LLAMA2C_H_

#include <string>

#include "absl/status/statusor.h"
#include "worker/model/weights.h"

namespace kvtier::model {

absl::StatusOr<ModelWeights> LoadLlama2cCheckpoint(const std::string& path);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_LOADER_LLAMA2C_H_
