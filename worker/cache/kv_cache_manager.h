// KvCacheManager: the worker's paged KV cache under a fixed page budget.
//
// One PagePool per layer holds every resident page of every sequence; each
// (sequence, layer) has a page table, a budget in pages (reserved in the
// pool when the sequence is added, so appends and recalls of an admitted
// sequence never run out of slots) and a digest per full page, kept
// resident for scoring. When a policy offloads, every page is backed up to
// the store as soon as it is full (asynchronously, batched, through a
// PageTransferQueue) and pinned there for the sequence's lifetime; an
// evicted page can be recalled, and the recalled bytes are checked against
// the checksum taken at backup time, so a recalled page is bit-identical to
// what was backed up or the recall fails.
//
// Page states and their transitions: page_state.h. Errors are never
// silent: a failed backup puts the sequence in a failed state that every
// later call reports; a page the store lost is recomputed through the
// PageRecomputer when one is set, or reported as DATA_LOSS; a store that is
// down or hung makes recall fail with UNAVAILABLE or DEADLINE_EXCEEDED once
// the transfer deadline passes.
//
// Keys: page i of a sequence is keyed (h_i, layer) with h_i from
// common/page_key.h's KeyChain over the sequence's token ids, so equal
// prefixes share stored pages across sequences and nodes.
//
// Thread-safety: not thread-safe; one decode thread owns the manager. The
// transfer queue's threads never touch manager state.
#ifndef KVTIER_WORKER_CACHE_KV_CACHE_MANAGER_H_
#define KVTIER_WORKER_CACHE_KV_CACHE_MANAGER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "worker/cache/kv_cache_options.h"
#include "worker/cache/page_pool.h"
#include "worker/cache/page_table.h"
#include "worker/device/device.h"
#include "worker/policy/policy.h"
#include "worker/policy/token_cache.h"
#include "worker/transfer/page_transfer_queue.h"
#include "worker/transfer/pin_keeper.h"

namespace kvtier::worker {

// Regenerates the bytes of a page the store lost (in the pool's layout), for
// instance by re-running the model over the page's tokens.
using PageRecomputer =
    std::function<absl::StatusOr<std::string>(uint64_t seq_id, uint32_t layer, uint32_t page)>;

class KvCacheManager : public TokenCache {
 public:
  // `device` and `policy` must outlive the manager; so must `transfers`
  // when the policy offloads (it may be null otherwise).
  static absl::StatusOr<std::unique_ptr<KvCacheManager>> Create(const KvCacheOptions& options,
                                                                Device* device, Policy* policy,
                                                                PageTransferQueue* transfers);
  // Cancels every live sequence.
  ~KvCacheManager() override;
  KvCacheManager(const KvCacheManager&) = delete;
  KvCacheManager& operator=(const KvCacheManager&) = delete;

  void set_recomputer(PageRecomputer recomputer) { recomputer_ = std::move(recomputer); }

  // Admits a sequence with a budget in pages for every layer, reserving the
  // pages in each layer's pool. INVALID_ARGUMENT for a bad budget list,
  // ALREADY_EXISTS, RESOURCE_EXHAUSTED when a pool or the sequence table is
  // full (nothing reserved then).
  absl::Status AddSequence(uint64_t seq_id, absl::Span<const uint32_t> budget_pages);

  // Appends token ids; the key of a page needs its tokens, so a layer's K/V
  // may only be appended for tokens whose ids are known.
  absl::Status AppendTokenIds(uint64_t seq_id, absl::Span<const uint32_t> tokens);

  // The chain hashes of every full page of `tokens` under this cache's
  // seed (tenant salt, model fingerprint, layout): the keys a sequence of
  // these tokens gives its pages.
  std::vector<Hash128> PrefixChain(absl::Span<const uint32_t> tokens) const;

  // Declares that pages [0, n_pages) of every layer are already in the
  // store (loaded from it): when they fill they are digested and
  // checksummed as usual but not backed up, and, when the policy offloads,
  // the sequence's pin takes them when the first K/V is appended (one
  // asynchronous pin; a failed pin fails the sequence like a failed
  // backup). REQUIRES: no K/V appended
  // yet and the token ids of those pages known; FAILED_PRECONDITION
  // otherwise.
  absl::Status AdoptStoredPrefix(uint64_t seq_id, uint32_t n_pages);

  // Appends `n` tokens of one layer: k and v are [n][n_kv_heads][head_dim]
  // fp32, stored in the pool's dtype. A page that fills is digested and,
  // when the policy offloads, backed up. A new page at budget takes the
  // slot of the policy's AppendVictim.
  absl::Status AppendKv(uint64_t seq_id, uint32_t layer, const float* k, const float* v,
                        uint32_t n) override;

  // The policy's view of a (sequence, layer), scores left empty. Valid
  // until the next call that changes the sequence.
  absl::StatusOr<LayerView> View(uint64_t seq_id, uint32_t layer) const override;

  // Digests of the sequence's full pages for `layer`: slot i is page i, in
  // the layout of kernels/digest.h (the policy's digest kind, elements of
  // digest_type()).
  absl::StatusOr<const void*> Digests(uint64_t seq_id, uint32_t layer) const;
  // The same digests in the memory of device() (a copy kept up to date
  // incrementally on a GPU; the host digests on the CPU backend), for
  // estimation there. Valid until the next call that changes the sequence.
  absl::StatusOr<const void*> DeviceDigests(uint64_t seq_id, uint32_t layer);
  kernels::ScalarType digest_type() const { return digest_format_.type; }
  // Bytes of the digests the policy scores pages by in `layer`, over every
  // live sequence: those of each (sequence, layer) whose digests
  // DeviceDigests has handed out (one slot per full page). Memory a
  // page-scoring policy holds beside its pages; 0 for the others.
  // REQUIRES: layer < n_layers.
  uint64_t ScoredDigestBytes(uint32_t layer) const;

  // Checks `plan` against the invariants of policy.h, evicts the resident
  // pages it drops and starts recalling the pages it adds (asynchronously).
  absl::Status ApplyPlan(uint64_t seq_id, uint32_t layer, const PagePlan& plan);

  // Waits for the recalls ApplyPlan started and installs the pages.
  // On error the pages that could not be installed are left evicted (or
  // kLost) and the error names them.
  absl::Status FinishRecalls(uint64_t seq_id, uint32_t layer);

  // Pool slots of `pages` (ascending; all resident) and the valid tokens in
  // the last one, for paged attention.
  absl::Status AttentionPages(uint64_t seq_id, uint32_t layer, absl::Span<const int32_t> pages,
                              std::vector<int32_t>* slots, int32_t* last_page_len) const;

  // TokenCache, for token-level policies (policy/token_policy.h). Token
  // eviction is only for policies that do not offload (stored pages are
  // never rewritten): FAILED_PRECONDITION otherwise.
  const PageLayout& layout() const override { return options_.layout; }
  uint32_t n_q_heads() const override { return options_.n_q_heads; }
  absl::Status EvictTokens(uint64_t seq_id, uint32_t layer,
                           absl::Span<const uint32_t> slots) override;
  absl::Status EvictHeadTokens(uint64_t seq_id, uint32_t layer,
                               absl::Span<const uint32_t> slots_by_head) override;
  absl::Status ReadTokens(uint64_t seq_id, uint32_t layer, std::vector<float>* k,
                          std::vector<float>* v) const override;
  absl::StatusOr<uint32_t> TokenIdCount(uint64_t seq_id) const override;

  // Applies finished backups; with `wait`, blocks until every backup of the
  // sequence has finished or passed its deadline.
  absl::Status ReapBackups(uint64_t seq_id, bool wait);

  // Ends a sequence: waits for its in-flight backups (each bounded by its
  // deadline), abandons its recalls, releases its store pin, its pool slots
  // and its reservations. Local resources are always released; the status
  // reports a pin that could not be released (it then expires by TTL).
  absl::Status Cancel(uint64_t seq_id);

  // Bytes of page `page` as the store holds it (tests, the recomputer).
  absl::StatusOr<std::string> ResidentPageBytes(uint64_t seq_id, uint32_t layer,
                                                uint32_t page) const;
  absl::StatusOr<PageKey> KeyOf(uint64_t seq_id, uint32_t layer, uint32_t page) const;
  // Pin id of the sequence in the store (opaque bytes), empty before its
  // first backup.
  absl::StatusOr<std::string> PinId(uint64_t seq_id) const;

  const KvCacheOptions& options() const { return options_; }
  const PagePool& pool(uint32_t layer) const { return *pools_[layer]; }
  Device* device() const { return device_; }
  Policy* policy() const { return policy_; }
  const CacheCounters& counters() const { return counters_; }
  size_t sequence_count() const { return sequences_.size(); }

 private:
  struct Sequence;

  KvCacheManager(const KvCacheOptions& options, Device* device, Policy* policy,
                 PageTransferQueue* transfers);

  absl::StatusOr<Sequence*> Find(uint64_t seq_id);
  absl::StatusOr<const Sequence*> Find(uint64_t seq_id) const;
  absl::Status OpenPage(Sequence& seq, uint32_t layer);
  absl::Status Evict(Sequence& seq, uint32_t layer, int32_t page);
  // EvictTokens (n_lists 1) and EvictHeadTokens (one list per KV head).
  absl::Status EvictTokenLists(uint64_t seq_id, uint32_t layer, absl::Span<const uint32_t> slots,
                               uint32_t n_lists);
  absl::Status OnPageFull(Sequence& seq, uint32_t layer, int32_t page,
                          std::vector<StoredPage>* backups);
  absl::Status SubmitBackups(Sequence& seq, uint32_t layer, std::vector<StoredPage> pages);
  absl::Status ApplyBackupResult(Sequence& seq, TransferId id, const TransferResult& result);
  // When the store lost the sequence's pin (SequencePin::lost), pins every
  // page whose backup completed under a new one, waiting for it.
  absl::Status RepinIfLost(Sequence& seq);
  // Pins the keys of the sequence's stored prefix (AdoptStoredPrefix).
  absl::Status PinStoredPrefix(Sequence& seq);
  absl::Status WaitBackup(Sequence& seq, TransferId id);
  // The bytes to install for a recalled page: the fetched ones, checked
  // against its layout, size and backup checksum, or the recomputer's
  // (appended to `recomputed`, whose capacity must not be exceeded).
  absl::StatusOr<const std::string*> CheckRecalled(Sequence& seq, uint32_t layer, int32_t page,
                                                   const FetchedPage& fetched,
                                                   std::vector<std::string>* recomputed);
  const Hash128& PageHash(Sequence& seq, uint32_t page);
  void ReleaseAll(Sequence& seq);

  const KvCacheOptions options_;
  Device* const device_;
  Policy* const policy_;
  PageTransferQueue* const transfers_;
  const Hash128 chain_seed_;
  const DigestFormat digest_format_;
  std::vector<std::unique_ptr<PagePool>> pools_;
  // Extends the pins of waiting sequences (null when the policy does not
  // offload); it holds only weak references to them.
  std::unique_ptr<PinKeeper> pin_keeper_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Sequence>> sequences_;
  PageRecomputer recomputer_;
  CacheCounters counters_;
  // A full page read back from a device pool's slot for its digest and
  // checksum (a CPU pool's slot is read in place).
  std::vector<char> page_scratch_;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_CACHE_KV_CACHE_MANAGER_H_
