#include "worker/token_attention.h"

#include <algorithm>
#include <cmath>

#include "kernels/dtype.h"

namespace kvtier::worker {

absl::Status CachedTokenMass(const PagePool& pool, absl::Span<const int32_t> slots,
                             uint32_t n_tokens, uint32_t n_q_heads, const float* q,
                             const float* lse, std::vector<float>* mass) {
  const PageLayout& lay = pool.layout();
  const uint32_t p = lay.page_size;
  if (n_tokens > slots.size() * p) {
    return absl::InvalidArgumentError("more tokens than the pages hold");
  }
  const uint32_t hkv = lay.n_kv_heads;
  const uint32_t d = lay.head_dim;
  const uint32_t group = n_q_heads / hkv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const auto type = static_cast<kernels::ScalarType>(lay.dtype);
  mass->assign(n_tokens, 0.0f);
  // Keys are read through the device, one page's K tensor at a time.
  std::vector<uint8_t> keys(lay.ElementsPerTensor() * DTypeBytes(lay.dtype));
  const uint8_t* page = keys.data();
  for (uint32_t j = 0; j < n_tokens; ++j) {
    if (j % p == 0) {
      if (absl::Status s = pool.ReadSlot(slots[j / p], 0, keys.data(), keys.size()); !s.ok()) {
        return s;
      }
    }
    const size_t token_base = size_t{j % p} * hkv * d;
    float total = 0.0f;
    for (uint32_t h = 0; h < n_q_heads; ++h) {
      const size_t k_base = token_base + size_t{h / group} * d;
      float dot = 0.0f;
      for (uint32_t c = 0; c < d; ++c) {
        dot += q[size_t{h} * d + c] * kernels::LoadAsFloat(page, type, k_base + c);
      }
      total += std::exp(scale * dot - lse[h]);
    }
    (*mass)[j] = total;
  }
  return absl::OkStatus();
}

void PromptTokenMass(const float* keys, uint32_t n, uint32_t n_kv_heads, uint32_t n_q_heads,
                     uint32_t head_dim, const float* q, std::vector<float>* mass) {
  const uint32_t group = n_q_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  mass->assign(n, 0.0f);
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
    for (uint32_t j = 0; j < n; ++j) (*mass)[j] += std::exp(logits[j] - max_logit) / sum;
  }
}

void RowTokenMass(const float* keys, uint32_t n, uint32_t n_kv_heads, uint32_t n_q_heads,
                  uint32_t head_dim, const float* q, const float* lse, std::vector<float>* mass) {
  const uint32_t group = n_q_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  mass->assign(n, 0.0f);
  for (uint32_t j = 0; j < n; ++j) {
    float total = 0.0f;
    for (uint32_t h = 0; h < n_q_heads; ++h) {
      const float* k = keys + (size_t{j} * n_kv_heads + h / group) * head_dim;
      float dot = 0.0f;
      for (uint32_t c = 0; c < head_dim; ++c) dot += q[size_t{h} * head_dim + c] * k[c];
      total += std::exp(scale * dot - lse[h]);
    }
    (*mass)[j] = total;
  }
}

}  // namespace kvtier::worker
