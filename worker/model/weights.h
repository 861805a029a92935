// A Llama-family model held in fp32: its hyperparameters and tensors.
//
// Matrices are row-major [out_features, in_features], the layout of both
// llama2.c checkpoints and GGUF (whose ne[0] is the row length). The rows of
// wq and wk are ordered so that RoPE rotates adjacent pairs (2i, 2i+1) of
// each head: llama2.c's export and llama.cpp's convert_hf_to_gguf both
// permute the Hugging Face weights into that order.
//
// Loaders (llama2c.h, gguf_model.h) dequantize everything at load; a 135M
// parameter model takes ~540 MB.
#ifndef KVTIER_WORKER_MODEL_WEIGHTS_H_
#define KVTIER_WORKER_MODEL_WEIGHTS_H_

#include <vector>

#include "absl/status/status.h"
#include "worker/model/attention_backend.h"

namespace kvtier::model {

struct ModelConfig {
  int dim = 0;         // residual stream width
  int hidden_dim = 0;  // SwiGLU inner width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int vocab_size = 0;
  int max_positions = 0;  // trained context length
  int head_dim = 0;       // dim / n_heads
  int rope_dim = 0;       // leading dims of each head that RoPE rotates
  float rope_theta = 10000.0f;
  float rms_eps = 1e-5f;

  int kv_dim() const { return n_kv_heads * head_dim; }
  // RoPE's frequency of pair p: theta^(-2p / rope_dim), [rope_dim / 2].
  std::vector<float> RopeFrequencies() const;
  // INVALID_ARGUMENT unless the sizes are positive and consistent.
  absl::Status Validate() const;
  AttentionShape attention_shape() const;
};

struct LayerWeights {
  std::vector<float> rms_att;  // [dim]
  std::vector<float> wq;       // [n_heads * head_dim, dim]
  std::vector<float> wk;       // [kv_dim, dim]
  std::vector<float> wv;       // [kv_dim, dim]
  std::vector<float> wo;       // [dim, n_heads * head_dim]
  std::vector<float> rms_ffn;  // [dim]
  std::vector<float> w_gate;   // [hidden, dim]   (llama2.c w1)
  std::vector<float> w_down;   // [dim, hidden]   (llama2.c w2)
  std::vector<float> w_up;     // [hidden, dim]   (llama2.c w3)
};

struct ModelWeights {
  ModelConfig config;
  std::vector<float> token_embedding;  // [vocab, dim]
  std::vector<LayerWeights> layers;
  std::vector<float> rms_final;  // [dim]
  // [vocab, dim]; empty when the classifier shares the embedding.
  std::vector<float> classifier;

  const float* classifier_data() const {
    return classifier.empty() ? token_embedding.data() : classifier.data();
  }
  // INVALID_ARGUMENT when a tensor's size disagrees with the config.
  absl::Status Validate() const;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_WEIGHTS_H_
