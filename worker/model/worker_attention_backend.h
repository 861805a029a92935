// WorkerAttentionBackend: runs the model's attention through the worker
// runtime (KvCacheManager + DecodeRunner) under one of its policies and a
// KV budget, so every policy is measured on real attention.
//
// Decode tokens go through DecodeRunner::DecodeLayer (append, estimate,
// select, recall, paged attention over the plan). A prompt processed in a
// batch is attended densely and exactly here (prefill attention is the
// model's business), its K/V held until HandOffPrompt (after the first
// token is taken; else the first decode token of that layer, or
// EndSequence), then handed to DecodeRunner::Prefill with the last prompt
// queries, so prompt-time selection (token policies, ArkVale) sees the
// whole prompt and the first token waits for none of it.
//
// Policies by name: full, sliding_window, streaming_llm, quest, arkvale,
// h2o, tova, arkv, arkv_last_query (ARKV ranking the prompt's keys by the
// last prompt query, ArkvOptions::score_rows = 1), h2o_per_head and
// arkv_per_head (each KV head keeps its own tokens, as the authors' caches
// do, instead of one decision per token; each with its own defaults). The budget is in tokens and rounds up to whole pages; for
// quest it bounds the pages attended per step while every page stays
// resident (under kResidentMemory Quest offloads instead and keeps only
// what it attends: QuestOptions::offload); for arkvale
// the first n_unlimited_layers keep the whole context (ArkVale's own rule;
// under kResidentMemory every layer is budgeted, for Quest too) and the
// top-k is half the budget; for full it must cover the context (0
// means exactly the context). That is the kLayerTokens unit; under
// kResidentMemory the budget bounds all layers' KV bytes together
// (BudgetUnit).
//
// Prefix reuse (driven by prefix_reuse.h): LookupPrefix asks the store how
// much of a prompt's key chain it holds for every layer; LoadPrefix starts
// a sequence from those pages instead of computing them. The loaded K/V
// become the sequence's first prompt rows, each layer's taken from the
// fetch when the model first reaches that layer (so later layers load
// while earlier ones prefill the rest of the prompt); at the first decode
// token they enter the cache like any prompt, except that the cache knows
// them as stored (KvCacheManager::AdoptStoredPrefix): not backed up again,
// pinned, evicted and recalled like any stored page, digested from the
// loaded bytes. A load the fetch rejects fails that layer's call and
// marks the sequence (reuse_failed); the caller then starts over.
//
// Thread-safety: none (one decode thread, as KvCacheManager).
#ifndef KVTIER_WORKER_MODEL_WORKER_ATTENTION_BACKEND_H_
#define KVTIER_WORKER_MODEL_WORKER_ATTENTION_BACKEND_H_

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "kernels/thread_pool.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/device/device.h"
#include "worker/model/attention_backend.h"
#include "worker/model/prompt_buffers.h"
#include "worker/model/prefix_fetch.h"
#include "worker/policy/policy.h"
#include "worker/transfer/in_process_page_store.h"
#include "worker/transfer/page_transfer_queue.h"

namespace kvtier::model {

// What budget_tokens bounds.
enum class BudgetUnit {
  // Each budgeted layer's pool holds at most budget_tokens (the papers'
  // convention): ArkVale's dense layers and Quest keep the context beyond
  // it, and ARKV's quantized tier comes on top of it.
  kLayerTokens,
  // Every KV byte a sequence holds, all layers together, stays within
  // budget_tokens x n_layers full-precision tokens. ArkVale and Quest keep
  // no dense layers (each would cost the context's pages, which the other
  // layers then lack: worker/policy/README.md), Quest pages out what a
  // step does not attend (QuestOptions::offload; quest_per_head, whose
  // lists can exceed any budget, is refused), and ARKV counts a quantized
  // token at its bytes (ArkvOptions::count_quantized_at_cost). Policies
  // that hold budget_tokens in every layer and nothing beside the pool run
  // as under kLayerTokens.
  kResidentMemory,
};
// "layer_tokens" or "memory"; INVALID_ARGUMENT for another name.
absl::StatusOr<BudgetUnit> ParseBudgetUnit(std::string_view name);
const char* BudgetUnitName(BudgetUnit unit);
// "f32" or "f16": the element type of page digests
// (WorkerBackendOptions::digest_dtype); INVALID_ARGUMENT otherwise.
absl::StatusOr<DType> ParseDigestDType(std::string_view name);

struct WorkerBackendOptions {
  // Policy name (see the file comment). Default "full".
  std::string policy = "full";
  // KV budget per (sequence, layer) in tokens; 0 (the default) means the
  // model's context. Must be >= 0.
  int budget_tokens = 0;
  // What the budget bounds. Default kLayerTokens.
  BudgetUnit budget_unit = BudgetUnit::kLayerTokens;
  // Per-layer budgets in tokens (one per layer, each positive), as a budget
  // allocator (XKV, LU-KV) gives them; empty (the default): budget_tokens
  // for every layer. Refused for "full", and for Quest under kLayerTokens,
  // which keep every page. ArkVale's dense layers (kLayerTokens) keep the
  // context either way. Each rounds up to whole pages; under
  // kResidentMemory with budget_tokens set, the largest then give pages
  // back until all fit within budget_tokens x n_layers.
  std::vector<int> layer_budget_tokens{};
  // Tokens per page. Default 16; 1..1024.
  int page_size = 16;
  // Element type of the page digests Quest and ArkVale score by
  // (worker::KvCacheOptions::digest_dtype): kF32 (the default) or kF16,
  // which halves their bytes.
  DType digest_dtype = DType::kF32;
  // Sequences alive at once. Default 4; must be positive.
  int max_sequences = 4;
  // The last prompt queries handed to DecodeRunner::Prefill (ARKV scores
  // the prompt with them; other policies read only the last). Default 32,
  // ARKV's observation window; must be positive.
  int prefill_query_rows = 32;
  // The store offloading policies back pages up to. Default nullptr: an
  // in-process store owned by the backend. Not owned; must outlive it.
  // With a store given, every policy can load stored prefixes.
  worker::PageStoreBackend* store = nullptr;
  // How stored prefixes are fetched.
  PrefixFetchOptions prefix_fetch{};
  // Where the KV pools live and decode attention, estimation and merges
  // run (worker/device/device.h): "cpu" (the default), "cuda" or "cuda:N".
  // Prefill attention stays on the CPU; the model's dense layers run where
  // TransformerOptions::device says.
  std::string device = "cpu";

  absl::Status Validate() const;
};

// The worker policy names this backend accepts, in the order above.
const std::vector<std::string>& WorkerPolicyNames();

// Whether policy `name` keeps every page of the context resident under
// `unit` (the full cache, and Quest under kLayerTokens, where its budget
// bounds only what it attends), so per-layer budgets do not apply to it.
bool PolicyKeepsEveryPage(const std::string& name, BudgetUnit unit = BudgetUnit::kLayerTokens);

class WorkerAttentionBackend : public AttentionBackend {
 public:
  // INVALID_ARGUMENT for a bad shape, options, unknown policy, or a budget
  // the policy cannot run with (e.g. full below the context).
  static absl::StatusOr<std::unique_ptr<WorkerAttentionBackend>> Create(
      const AttentionShape& shape, const WorkerBackendOptions& options);
  ~WorkerAttentionBackend() override;

  const AttentionShape& shape() const override { return shape_; }
  absl::Status StartSequence(SequenceId seq) override;
  absl::Status EndSequence(SequenceId seq) override;
  absl::Status AppendTokens(SequenceId seq, int pos0,
                            absl::Span<const int> tokens) override;
  absl::Status Append(SequenceId seq, int layer, int pos,
                      absl::Span<const float> k,
                      absl::Span<const float> v) override;
  absl::Status Attend(SequenceId seq, int layer, absl::Span<const float> q,
                      absl::Span<float> out) override;
  // Hands every layer's prompt to the decode runner, which plans the budget
  // over it (the policy's prefill: selection, backups, recalls).
  absl::Status EndPrefill(SequenceId seq) override;
  absl::Status HandOffPrompt(SequenceId seq) override;
  absl::Status AppendAndAttendBatch(SequenceId seq, int layer, int pos0,
                                    int n_tokens, absl::Span<const float> k,
                                    absl::Span<const float> v,
                                    absl::Span<const float> q,
                                    absl::Span<float> out) override;

  // The chain hashes of `prompt`'s full pages, as this backend keys them.
  // Every prefix call refuses a negative token id (INVALID_ARGUMENT).
  absl::StatusOr<std::vector<Hash128>> PrefixChain(absl::Span<const int> prompt) const;
  // Prefix reuse. Pages of the longest prefix of `prompt` stored for every
  // layer, at most `max_pages`; FAILED_PRECONDITION without a store.
  absl::StatusOr<uint32_t> LookupPrefix(absl::Span<const int> prompt, uint32_t max_pages);
  // Starts `seq` (started, nothing appended) from the stored pages
  // [0, n_pages) of `prompt`: their token ids are appended and every layer
  // continues at position n_pages * page_size.
  absl::Status LoadPrefix(SequenceId seq, absl::Span<const int> prompt, uint32_t n_pages);
  // Fetches pages [0, n_pages) of `prompt`'s layer 0 and drops them: a
  // probe of the store's get bandwidth (busy_s, bytes_loaded).
  absl::StatusOr<PrefixFetchStats> ProbePrefix(absl::Span<const int> prompt, uint32_t n_pages);
  const PrefixFetchOptions& prefix_fetch_options() const { return prefix_fetch_; }
  // Whether a prefix load of `seq` was rejected (NOT_FOUND for a sequence
  // that is not live).
  absl::StatusOr<bool> reuse_failed(SequenceId seq) const;
  // The fetch figures of `seq`'s prefix load (zeros without one).
  absl::StatusOr<PrefixFetchStats> prefix_stats(SequenceId seq) const;
  // Bytes of one stored page (one layer).
  uint64_t page_bytes() const;
  int page_size() const { return static_cast<int>(cache_->layout().page_size); }
  worker::PageTransferQueue* transfers() const { return transfers_.get(); }

  const worker::StepStats& stats() const { return stats_; }
  const worker::CacheCounters& counters() const { return cache_->counters(); }
  // Resident pages per layer of each sequence (ArkVale's first layers and
  // Quest keep the whole context).
  const std::vector<uint32_t>& layer_budgets() const { return layer_budgets_; }
  // Pages the layers' device pools hold now, and may hold, all layers.
  uint64_t resident_pages() const;
  uint64_t pool_capacity_pages() const;
  // The most pages the layers' pools held at once since the backend was
  // made, summed over layers (each pool's high-water mark).
  uint64_t peak_resident_pages() const;
  // The most KV bytes held at once since the backend was made: the layers'
  // pools (whole pages) and what the policy holds beside them (ARKV's
  // quantized tier), taken after every call that changes either.
  uint64_t peak_resident_bytes() const { return peak_bytes_; }
  // The same per layer: each layer's most at once.
  const std::vector<uint64_t>& peak_resident_layer_bytes() const { return layer_peak_bytes_; }
  // The most bytes of page digests the policy scored pages by at once, all
  // layers (KvCacheManager::ScoredDigestBytes: Quest and ArkVale hold two
  // fp32 vectors per full page and KV head beside their pages), sampled
  // with the resident bytes. Not in peak_resident_bytes().
  uint64_t peak_digest_bytes() const { return peak_digest_bytes_; }

 private:
  // Per (sequence, layer): the prompt not yet handed to the runner, and the
  // decode token between Append and Attend.
  struct LayerState {
    PromptRows prompt_k, prompt_v;  // [n, kv_dim]
    std::vector<float> recent_q;  // the last prompt queries, [rows, q_dim]
    int prompt_tokens = 0;
    bool decoding = false;
    std::vector<float> k, v;  // the pending decode token
    bool pending = false;
    int positions = 0;  // tokens seen by this layer
    bool awaiting_prefix = false;  // the loaded prefix is not taken yet
  };
  struct SequenceState {
    std::vector<LayerState> layers;
    std::unique_ptr<PrefixFetch> fetch;  // while layers await the prefix
    PrefixFetchStats fetch_stats;
    bool reuse_failed = false;
    bool prompt_complete = false;  // EndPrefill was called
  };

  WorkerAttentionBackend(const AttentionShape& shape,
                         std::vector<uint32_t> layer_budgets,
                         int prefill_query_rows, int max_sequences);
  absl::StatusOr<LayerState*> Find(SequenceId seq, int layer);
  absl::Status FlushPrompt(SequenceId seq, int layer, LayerState& state);
  // Waits for the loaded prefix of `layer`, which lands in its prompt rows.
  absl::Status TakePrefix(SequenceId seq, int layer, LayerState& state);
  // Takes the resident bytes of `layer` now into the peaks.
  void SampleResident(int layer);

  const AttentionShape shape_;
  const std::vector<uint32_t> layer_budgets_;
  const int prefill_query_rows_;
  PrefixFetchOptions prefix_fetch_;
  std::unique_ptr<worker::Policy> policy_;
  // Declared before the cache, which allocates its pools there.
  std::unique_ptr<worker::Device> device_;
  std::unique_ptr<worker::InProcessPageStore> store_;  // offloading only
  std::unique_ptr<worker::PageTransferQueue> transfers_;
  std::unique_ptr<worker::KvCacheManager> cache_;
  std::unique_ptr<worker::DecodeRunner> runner_;
  absl::flat_hash_map<SequenceId, SequenceState> sequences_;
  // prompt_k / prompt_v between prefills: two a layer for each sequence.
  PromptBufferPool prompt_buffers_;
  worker::StepStats stats_;
  // Resident KV bytes (pool pages and the policy's own) per layer now, their
  // sum, and the peaks (SampleResident).
  std::vector<uint64_t> layer_bytes_, layer_peak_bytes_;
  uint64_t resident_bytes_ = 0, peak_bytes_ = 0;
  // The same for the scored digests.
  std::vector<uint64_t> layer_digest_bytes_;
  uint64_t digest_bytes_ = 0, peak_digest_bytes_ = 0;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_WORKER_ATTENTION_BACKEND_H_
