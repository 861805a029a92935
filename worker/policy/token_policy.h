// Token-level eviction policies on the paged pool: H2O and TOVA.
//
// How tokens live in pages: a token-level policy's cache holds at most
// budget_pages * page_size tokens of a (sequence, layer), packed into the
// first pages of its page table in no particular order (attention does not
// depend on the order of keys: they are post-RoPE). Evicting the token in
// cache slot s moves the newest cached token into s and shrinks the cache by
// one (TokenCache::EvictTokens), and the policy applies the same move to
// its per-slot arrays with ApplySwapRemove, so slot numbers agree. Pages are
// never partially masked: memory use is exactly the kept tokens, rounded up
// to a page. Nothing is backed up; an evicted token is gone.
//
// Step protocol (DecodeRunner): the new token is appended, attention runs
// over the whole cache, then AfterAttention gets each cached token's
// attention mass (softmax probability summed over every query head of the
// layer) and returns the slots to evict so that one slot is free for the
// next token. So attention sees up to budget_tokens tokens and the cache
// holds budget_tokens - 1 between steps.
//
// GQA and per-head state: a policy either keeps each KV head's own tokens
// (per_kv_head(): each head ranks its slots by the mass of its group's
// query heads and evicts its own victims, TokenCache::EvictHeadTokens, so
// slot j of two heads may hold different tokens; every head holds the same
// number) or makes one decision per token from the mass summed over all
// heads, shared by every head. H2O's and ARKV's authors keep per-head
// caches (for GQA, H2O's group sum and ARKV's group mean), TOVA's make one
// decision per token for the whole layer. [interp] All three share one
// decision per token by default; H2O and ARKV keep per-head caches as an
// option, which found fewer needles on SmolLM2 (worker/policy/README.md).
//
// State is per (sequence, layer); EndSequence drops it. Not thread-safe:
// driven by the decode thread that owns the cache manager.
#ifndef KVTIER_WORKER_POLICY_TOKEN_POLICY_H_
#define KVTIER_WORKER_POLICY_TOKEN_POLICY_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "worker/policy/policy.h"
#include "worker/policy/token_cache.h"

namespace kvtier::worker {

// The (sequence, layer) a token policy acts on.
struct TokenContext {
  TokenCache* cache = nullptr;
  uint64_t seq_id = 0;
  uint32_t layer = 0;
};

// Extra float pages attention also reads, in the pool's layout and dtype:
// page i at pool + i * page_stride_bytes, all full but the last
// (last_page_len tokens). n_pages 0: none.
struct AuxKv {
  const void* pool = nullptr;
  size_t page_stride_bytes = 0;
  uint32_t n_pages = 0;
  int32_t last_page_len = 0;
};

// The K and V rows a selection keeps, for AppendKv: k and v are
// [n][n_kv_heads][head_dim] fp32; `rows` is one list of count rows for
// every head (n_lists 1) or one list per KV head ([n_kv_heads][count]).
// Output row i, head h, is input row rows[l][i], head h, with l = h for
// per-head lists and 0 for one list.
struct KvRows {
  std::vector<float> k, v;  // [count][n_kv_heads][head_dim]
  uint32_t count = 0;
};
KvRows GatherKvRows(const float* k, const float* v, absl::Span<const uint32_t> rows,
                    uint32_t n_lists, const PageLayout& layout);

// Evicts slots in descending order, each by moving the last element into it.
// REQUIRES: slots strictly descending, each < v.size().
template <typename T>
void ApplySwapRemove(std::vector<T>& v, absl::Span<const uint32_t> slots_descending) {
  for (uint32_t s : slots_descending) {
    v[s] = v.back();
    v.pop_back();
  }
}

class TokenPolicy : public Policy {
 public:
  bool offloads() const override { return false; }
  bool NeedsScores(const LayerView&) const override { return false; }
  // Every cached page is resident and attended.
  absl::StatusOr<PagePlan> Plan(const LayerView& view) override;
  // Eviction happens after attention, never at append time.
  int32_t AppendVictim(const LayerView&) override { return -1; }
  TokenPolicy* AsTokenPolicy() override { return this; }

  // Hooks the decode step calls. The defaults compute the attention mass
  // (token_attention.h) and apply SelectPrefill / AfterAttention below.
  // Prefill: k, v [n][Hkv][D]; queries are the last n_queries prompt rows.
  virtual absl::Status RunPrefill(const TokenContext& ctx, const float* k, const float* v,
                                  uint32_t n, const float* queries, uint32_t n_queries);
  // After attention over every cached page and Auxiliary(); lse is the
  // merged log-sum-exp per query head.
  virtual absl::Status RunAfterAttention(const TokenContext& ctx, const float* q,
                                         const float* lse);
  virtual AuxKv Auxiliary(uint64_t /*seq_id*/, uint32_t /*layer*/) const { return AuxKv(); }

  // Whether each KV head keeps its own tokens (see above).
  virtual bool per_kv_head() const { return false; }
  // The selections a layer of `layout` keeps: 1, or one per KV head.
  uint32_t ListCount(const PageLayout& layout) const {
    return per_kv_head() ? layout.n_kv_heads : 1;
  }

  // Prompt of n tokens: `mass` is the last prompt token's attention mass
  // over the n tokens for each of n_lists selections ([n_lists][n]: one
  // shared by every head, or one per KV head). Returns the prompt positions
  // each list keeps, ascending, at most capacity - 1 and as many in every
  // list ([n_lists][kept]). The kept tokens are appended in that order.
  absl::StatusOr<std::vector<uint32_t>> SelectPrefill(uint64_t seq_id, uint32_t layer,
                                                      uint32_t capacity,
                                                      absl::Span<const float> mass,
                                                      uint32_t n_lists);

  // After a decode step's attention over the n cached tokens (the newest,
  // at position `position`, in slot n - 1 of every list), with `mass`
  // [n_lists][n] as at prefill: the slots to evict, [n_lists][count], each
  // list strictly descending, leaving at most capacity - 1 tokens.
  absl::StatusOr<std::vector<uint32_t>> AfterAttention(uint64_t seq_id, uint32_t layer,
                                                       uint32_t capacity, uint32_t position,
                                                       absl::Span<const float> mass,
                                                       uint32_t n_lists);

  virtual void EndSequence(uint64_t seq_id);

 protected:
  // Per (sequence, layer): the original position of the token in each slot
  // and the policy's score of it.
  struct Slots {
    std::vector<uint32_t> position;
    std::vector<float> score;
  };
  // Updates `slots.score` from this step's mass (slots.score has one entry
  // per cached token) before victims are chosen.
  virtual void Score(Slots& slots, absl::Span<const float> mass) = 0;
  // The `count` slots to evict, given scores and positions.
  virtual std::vector<uint32_t> Victims(const Slots& slots, uint32_t capacity,
                                        uint32_t count) = 0;

 private:
  // Per (sequence, layer): one Slots per list.
  absl::flat_hash_map<std::pair<uint64_t, uint32_t>, std::vector<Slots>> state_;
};

// H2O: keep the `recent` newest tokens plus the `heavy` older tokens with
// the largest accumulated attention (summed over every step so far; the
// prompt contributes its last row only, as in the FlashAttention setups).
struct H2oOptions {
  // Share of the capacity for recent tokens; the rest is heavy hitters.
  // [interp] 0.5: neither ArkVale nor Quest gives the split for a fixed
  // budget (H2O's own default is heavy = recent = 0.1 x prompt).
  double recent_fraction = 0.5;
  // false: one decision per token from the mass of every query head,
  // shared by all KV heads. true (the authors' per-head caches; policy name
  // "h2o_per_head"): each KV head keeps its own tokens, scored by the summed
  // mass of its query heads. [interp] false: on SmolLM2 the per-head caches
  // found fewer needles (worker/policy/README.md).
  bool per_kv_head = false;
  absl::Status Validate() const;
};

class H2oPolicy : public TokenPolicy {
 public:
  static absl::StatusOr<std::unique_ptr<H2oPolicy>> Create(H2oOptions options);
  std::string_view name() const override {
    return options_.per_kv_head ? "h2o_per_head" : "h2o";
  }
  bool per_kv_head() const override { return options_.per_kv_head; }

 protected:
  void Score(Slots& slots, absl::Span<const float> mass) override;
  std::vector<uint32_t> Victims(const Slots& slots, uint32_t capacity, uint32_t count) override;

 private:
  explicit H2oPolicy(H2oOptions options) : options_(options) {}
  const H2oOptions options_;
};

// TOVA: keep the tokens with the largest attention from the current query
// (not accumulated); evicts the lowest one each step.
class TovaPolicy : public TokenPolicy {
 public:
  std::string_view name() const override { return "tova"; }

 protected:
  void Score(Slots& slots, absl::Span<const float> mass) override;
  std::vector<uint32_t> Victims(const Slots& slots, uint32_t capacity, uint32_t count) override;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_POLICY_TOKEN_POLICY_H_
