// Per-token attention mass for token-level policies (H2O, TOVA, ARKV): the
// softmax probability each cached key gets from the current query, summed
// over every query head of the layer, or, per KV head, over the query heads
// of its group. The decode attention kernel returns only outputs and
// log-sum-exps, so the mass is recomputed from the keys and the kernel's
// lse: p_hj = exp(scale * q_h . k_j - lse_h).
//
// `mass` becomes [n] (per_kv_head false) or [n_kv_heads][n] (true); the
// per-head masses of a group sum, in order, to what its heads contribute
// to the layer's.
#ifndef KVTIER_WORKER_POLICY_TOKEN_ATTENTION_H_
#define KVTIER_WORKER_POLICY_TOKEN_ATTENTION_H_

#include <cstdint>
#include <vector>

namespace kvtier::worker {

// Keys [n][n_kv_heads][head_dim] fp32 (a prompt);
// the softmax is computed here over all n keys.
void PromptTokenMass(const float* keys, uint32_t n, uint32_t n_kv_heads, uint32_t n_q_heads,
                     uint32_t head_dim, const float* q, bool per_kv_head,
                     std::vector<float>* mass);

// Keys [n][n_kv_heads][head_dim] fp32 (cached tokens, as TokenCache::
// ReadTokens gives them), with the
// log-sum-exp per query head taken from an attention that covered them.
void RowTokenMass(const float* keys, uint32_t n, uint32_t n_kv_heads, uint32_t n_q_heads,
                  uint32_t head_dim, const float* q, const float* lse, bool per_kv_head,
                  std::vector<float>* mass);

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_TOKEN_ATTENTION_H_
