#include "worker/policy/token_attention.h"

#include <algorithm>
#include <cmath>


namespace kvtier::worker {

void PromptTokenMass(const float* keys, uint32_t n, uint32_t n_kv_heads, uint32_t n_q_heads,
                     uint32_t head_dim, const float* q, bool per_kv_head,
                     std::vector<float>* mass) {
  const uint32_t group = n_q_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  mass->assign(size_t{per_kv_head ? n_kv_heads : 1u} * n, 0.0f);
  std::vector<float> logits(n);
  for (uint32_t h = 0; h < n_q_heads; ++h) {
    float max_logit = -INFINITY;
    for (uint32_t j = 0; j < n; ++j) {
      const float* k = keys + (size_t{j} * n_kv_heads + h / group) * head_dim;
      float dot = 0.0f;
      for (uint32_t c = 0; c < head_dim; ++c) dot += q[size_t{h} * head_dim + c] * k[c];
      logits[j] = scale * dot;
      max_logit = std::max(max_logit, logits[j]);
    }
    float sum = 0.0f;
    for (uint32_t j = 0; j < n; ++j) sum += std::exp(logits[j] - max_logit);
    float* out = mass->data() + (per_kv_head ? size_t{h / group} * n : 0);
    for (uint32_t j = 0; j < n; ++j) out[j] += std::exp(logits[j] - max_logit) / sum;
  }
}

void RowTokenMass(const float* keys, uint32_t n, uint32_t n_kv_heads, uint32_t n_q_heads,
                  uint32_t head_dim, const float* q, const float* lse, bool per_kv_head,
                  std::vector<float>* mass) {
  const uint32_t group = n_q_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  const uint32_t n_out = per_kv_head ? n_kv_heads : 1;
  mass->assign(size_t{n_out} * n, 0.0f);
  std::vector<float> total(n_out);
  for (uint32_t j = 0; j < n; ++j) {
    std::fill(total.begin(), total.end(), 0.0f);
    for (uint32_t h = 0; h < n_q_heads; ++h) {
      const float* k = keys + (size_t{j} * n_kv_heads + h / group) * head_dim;
      float dot = 0.0f;
      for (uint32_t c = 0; c < head_dim; ++c) dot += q[size_t{h} * head_dim + c] * k[c];
      total[per_kv_head ? h / group : 0] += std::exp(scale * dot - lse[h]);
    }
    for (uint32_t g = 0; g < n_out; ++g) (*mass)[size_t{g} * n + j] = total[g];
  }
}

}  // namespace kvtier::worker
