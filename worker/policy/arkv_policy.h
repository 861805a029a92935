// ArkvPolicy: per-token tri-state — full precision, quantized or evicted
// (ARKV, arXiv 2603.08727; ALGORITHMS.md §4), on the packed token cache of
// token_policy.h.
//
// Prefill, per layer: the last W = min(window, prompt rows given) queries'
// attention over the non-window keys gives the layer's OQ score
//   OQ = entropy^(1/tau1) * variance^(1/tau2) * kurtosis^(1/tau3)
// (entropy summed over all entries, variance and Pearson kurtosis along the
// query axis summed over heads and keys), and a heavy-hitter score per key
// mean_q(A) + gamma * var_q(A), average-pooled over pool_kernel tokens,
// over the window or its last score_rows queries (ArkvOptions::score_rows).
// A prompt longer than cache_size keeps the top cache_size - W keys plus
// the window, all in full precision (with quantized tokens counted at their
// bytes, the top origin_budget - W in full precision and the next ones
// quantized while both tiers fit: ArkvOptions::count_quantized_at_cost).
// Decode: when the cache (both tiers) exceeds cache_size, every non-window
// token is scored by the current query's attention (pooled, not
// accumulated); of past = len - W tokens the top keep = floor(0.75 past)
// survive, the best min(origin_budget - W, keep) of them in full precision
// and the rest quantized; the window stays in full precision. origin_budget
// = round(rho * (cache_size - W)), rho = OQ / max OQ over the sequence's
// layers (W is subtracted twice, as in the authors' code).
//
// Choices ([interp]):
//   - cache_size = budget_pages * page_size - 1 tokens (one slot stays free
//     for the next token, as for every token policy), counting both tiers,
//     as ARKV's cache_size does. The full-precision tier lives in the page
//     pool; the quantized tier in pages of quant_type (fp8 e4m3 with
//     per-token scales by default, or int8; the kernels' page quantizer)
//     held by the policy, plus a dequantized copy that attention reads as
//     auxiliary pages (ARKV dequantizes before attention too).
//   - Tokens are re-ranked from their dequantized values, so a quantized
//     token that wins a full-precision place is stored from those values.
//   - Scores are summed over all query heads: one decision per token,
//     shared by every KV head (token_policy.h). The authors rank per KV
//     head by the group mean; ArkvOptions::per_kv_head does so (each head
//     keeps its own full-precision and quantized tokens, as many as every
//     other head; the OQ score and origin_budget stay per layer), and
//     found no more needles on SmolLM2 (worker/policy/README.md).
//   - Variance uses the unbiased estimator (torch.var's default).
//   - The heavy-hitter score is pooled over 21 tokens where the authors
//     pool over 5: a key of several tokens is read through one or two of
//     them, and the wider pool keeps the whole key around them. On
//     SmolLM2-135M's needle suite at 1/8 of the memory ARKV then found
//     every passkey the full cache found at 1K and 2K tokens (5 of 9 and
//     4 of 9 with 5), greedy agreement 0.914 and 0.961 (0.508 and 0.659),
//     and its continuations stopped looping; 31 retrieved a little better
//     and continued prose worse (worker/policy/README.md, "ARKV's pool").
//
// Not thread-safe (see token_policy.h).
#ifndef KVTIER_WORKER_POLICY_ARKV_POLICY_H_
#define KVTIER_WORKER_POLICY_ARKV_POLICY_H_

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "worker/policy/token_policy.h"

namespace kvtier::worker {

struct ArkvOptions {
  // Recent tokens always kept in full precision (W).
  uint32_t window = 32;
  // OQ exponents and the heavy-hitter variance weight: the authors' tuned
  // values (fallback in their code: tau = 1, gamma = 200).
  double tau1 = 7.774;
  double tau2 = 5.407;
  double tau3 = 5.528;
  double gamma = 263.8;
  // Share of the non-window tokens kept when the cache overflows.
  double keep_fraction = 0.75;
  // Average-pooling width of the heavy-hitter score (odd): 21 where the
  // authors pool over 5 (see the choices above).
  uint32_t pool_kernel = 21;
  // The last prompt queries whose attention ranks the prompt's keys at
  // prefill (mean + gamma * var over them): 0 (the authors') = the whole
  // window; 1 = the last prompt query alone, as TOVA ranks (policy name
  // "arkv_last_query"; worker/policy/README.md has the measurements). The
  // OQ score reads the whole window either way.
  uint32_t score_rows = 0;
  // kFp8E4M3 (the authors') or kInt8.
  kernels::ScalarType quant_type = kernels::ScalarType::kFp8E4M3;
  // false (the authors'): cache_size counts a quantized token as one token.
  // true: at its bytes, c = quantized page bytes / full-precision page
  // bytes of a token (about 0.27 for fp8 with scales against fp32), so the
  // cache overflows when full + c * quantized > cache_size, and an overflow
  // keeps, best first, tokens worth keep_fraction of the past's cost (the
  // full-precision ones at 1, then quantized ones at c). With c = 1 both
  // rules are the authors'. A prompt longer than the cache is split the
  // same way: the top origin_budget - W keys (rho over the layers
  // prefilled so far) in full precision, the next quantized while both
  // tiers cost at most cache_size, so the quantized tier holds prompt
  // tokens from the start (with c = 1 that split would only trade full
  // precision for nothing; the authors keep the top cache_size - W in full
  // precision). An equal-memory budget uses true.
  bool count_quantized_at_cost = false;
  // false: one decision per token from the scores summed over every query
  // head, shared by all KV heads. true (the authors'; policy name
  // "arkv_per_head"): each KV head selects its own tokens.
  bool per_kv_head = false;

  absl::Status Validate() const;
};

class ArkvPolicy : public TokenPolicy {
 public:
  static absl::StatusOr<std::unique_ptr<ArkvPolicy>> Create(ArkvOptions options);
  std::string_view name() const override { return "arkv"; }
  bool per_kv_head() const override { return options_.per_kv_head; }

  absl::Status RunPrefill(const TokenContext& ctx, const float* k, const float* v, uint32_t n,
                          const float* queries, uint32_t n_queries) override;
  absl::Status RunAfterAttention(const TokenContext& ctx, const float* q,
                                 const float* lse) override;
  AuxKv Auxiliary(uint64_t seq_id, uint32_t layer) const override;
  void EndSequence(uint64_t seq_id) override;

  // Observers (tests, reports).
  double OqScore(uint64_t seq_id, uint32_t layer) const;
  uint32_t QuantizedTokens(uint64_t seq_id, uint32_t layer) const;
  // Bytes of the quantized tier of a layer (codes and scales; the
  // dequantized copy attention reads is not counted).
  size_t QuantizedBytes(uint64_t seq_id, uint32_t layer) const;
  uint64_t own_layer_kv_bytes(uint32_t layer) const override;
  // Original positions of a KV head's tokens in each tier (full precision
  // in slot order, quantized in tier order); with one shared selection
  // every head's.
  std::vector<uint32_t> FullPrecisionPositions(uint64_t seq_id, uint32_t layer,
                                               uint32_t kv_head = 0) const;
  std::vector<uint32_t> QuantizedPositions(uint64_t seq_id, uint32_t layer,
                                           uint32_t kv_head = 0) const;

 protected:
  // Not used: RunPrefill and RunAfterAttention are overridden.
  void Score(Slots&, absl::Span<const float>) override {}
  std::vector<uint32_t> Victims(const Slots&, uint32_t, uint32_t) override { return {}; }

 private:
  struct Layer {
    double oq = 0;
    // One list per selection (1, or one per KV head), all of equal length.
    std::vector<std::vector<uint32_t>> origin_pos;  // by pool cache slot
    std::vector<std::vector<uint32_t>> quant_pos;   // by quantized-tier slot
    std::vector<uint8_t> quant;        // quantized pages
    std::vector<uint8_t> dequant;      // the same pages dequantized (pool dtype)
    uint32_t quant_pages = 0;
    uint32_t page_size = 0;
  };
  using Key = std::pair<uint64_t, uint32_t>;

  explicit ArkvPolicy(ArkvOptions options) : options_(options) {}
  absl::Status Rebuild(const TokenContext& ctx, Layer& state, const float* q, const float* lse);
  // Replaces the quantized tier with `rows`.
  absl::Status StoreQuantized(const TokenCache& cache, Layer& state, const KvRows& rows);
  uint32_t OriginBudget(uint64_t seq_id, uint32_t layer, uint32_t cache_size) const;
  // What a quantized token counts for in cache_size (see ArkvOptions).
  double QuantizedCost(const PageLayout& lay) const;
  // The tokens both tiers may hold, full precision counting 1 and quantized
  // QuantizedCost: budget_pages * page_size - 1, or at cost what whole
  // pages of both tiers leave.
  uint32_t CacheSize(const LayerView& view, const PageLayout& lay) const;

  const ArkvOptions options_;
  absl::flat_hash_map<Key, Layer> layers_;
};

// The heavy-hitter pooling: out[j] = mean of in[j - k/2 .. j + k/2] with
// zero padding counted (torch avg_pool1d's default).
std::vector<float> AvgPool1d(const std::vector<float>& in, uint32_t kernel);

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_ARKV_POLICY_H_
