// PageTable: the page table of one (sequence, layer) in the cache manager:
// per page its state (policy/page_state.h), pool slot, backup checksum and
// in-flight put, the digests of its full pages, and the recalls a plan
// started. The cache manager (kv_cache_manager.h) moves pages between
// states; this class holds the table and the operations that need nothing
// but the table and the layer's pool.
//
// Invariants: states, slots, checksums and puts have one entry per page;
// slots[p] >= 0 exactly when HoldsSlot(states[p]); slots_held counts them
// and never exceeds budget_pages; n_tokens fills pages [0, states.size())
// with only the last one partial; digests hold n_digested slots.
//
// Thread-safety: not thread-safe; owned by the manager's decode thread.
#ifndef KVTIER_WORKER_CACHE_PAGE_TABLE_H_
#define KVTIER_WORKER_CACHE_PAGE_TABLE_H_

#include <cstdint>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"
#include "common/page_layout.h"
#include "kernels/digest.h"
#include "worker/cache/page_pool.h"
#include "worker/device/device.h"
#include "worker/policy/page_state.h"
#include "worker/policy/policy.h"
#include "worker/transfer/page_transfer_queue.h"

namespace kvtier::worker {

// How a table's page digests are kept: the policy's kind, stored as
// `type` (kF32 or kF16), `slot_elements` per full page.
struct DigestFormat {
  kernels::DigestKind kind = kernels::DigestKind::kMinMax;
  kernels::ScalarType type = kernels::ScalarType::kF32;
  size_t slot_elements = 0;

  size_t slot_bytes() const { return slot_elements * kernels::ScalarBytes(type); }
};

struct PageTable {
  uint32_t budget_pages = 0;
  uint32_t n_tokens = 0;
  uint32_t slots_held = 0;  // pages in a slot-holding state
  // Per page, index = page number.
  std::vector<PageState> states;
  std::vector<int32_t> slots;       // pool slot, -1 when none
  std::vector<uint64_t> checksums;  // of the bytes backed up
  std::vector<TransferId> puts;     // in-flight backup, 0 when none
  std::vector<uint8_t> digests;     // n_digested slots of DigestFormat::slot_bytes
  uint32_t n_digested = 0;
  // A copy of the digests in the pool device's memory, for estimation
  // there (MirrorDigests); its first n_mirrored slots equal `digests`'.
  std::unique_ptr<DeviceBuffer> mirror;
  uint32_t n_mirrored = 0;
  // Set once the policy has scored this layer's pages by their digests
  // (KvCacheManager::DeviceDigests): the digests then count as memory the
  // policy holds (KvCacheManager::ScoredDigestBytes).
  bool digests_scored = false;
  // Recalls started by a plan and not yet finished: (transfer, pages).
  std::vector<std::pair<TransferId, std::vector<int32_t>>> recalls;

  uint32_t n_pages() const { return static_cast<uint32_t>(states.size()); }

  // The policy's view of this table (scores left empty).
  LayerView View(uint32_t layer, uint32_t page_size) const;

  // INTERNAL unless `plan` keeps policy.h's invariants for this table:
  // ascending page lists, at most budget_pages resident, the last page
  // resident, attend a subset of resident, head_attend empty or one list
  // per KV head (n_kv_heads), each a subset of attend that ends with the
  // last page. `policy` names the planner.
  absl::Status CheckPlan(const PagePlan& plan, std::string_view policy,
                         uint32_t n_kv_heads) const;

  // Pool slots of `pages` (all resident, any order) and the valid tokens in
  // the last one; FAILED_PRECONDITION for a page that is not resident.
  absl::Status AttentionSlots(absl::Span<const int32_t> pages, uint32_t page_size,
                              std::vector<int32_t>* slots, int32_t* last_page_len) const;

  // Frees `page`'s slot in `pool`; the page goes to `state` (one that holds
  // no slot). REQUIRES: HoldsSlot(states[page]).
  void FreeSlot(PagePool& pool, int32_t page, PageState state);
  // Frees every slot and the budget's reservation in `pool` (the sequence
  // ends).
  void ReleaseSlots(PagePool& pool);

  // Digests the next full page, whose bytes (`layout`) are at `page_bytes`,
  // into digest slot n_digested.
  absl::Status AppendDigest(const void* page_bytes, const PageLayout& layout,
                            const DigestFormat& format);

  // The digests in `device`'s memory (`slot_bytes` per slot), copying
  // only the slots digested since the last call; the copy grows by
  // doubling (a new buffer is filled whole). On the CPU backend, the host
  // digests themselves. RESOURCE_EXHAUSTED when the device has no room.
  absl::StatusOr<const void*> MirrorDigests(Device* device, size_t slot_bytes);

  // A backup of `page` finished: kBackingUp becomes kResident and
  // kEvictedBackingUp kEvicted when it succeeded; kEvictedBackingUp becomes
  // kLost when it failed (its only copy was in the transfer).
  void OnBackupDone(int32_t page, bool ok);

  // Token-level caches (policy/token_cache.h). Removes `count` cached
  // tokens: `token_slots` is one list of `count` slots for every KV head
  // (n_lists 1) or one per KV head ([n_kv_heads][count]; n_lists =
  // n_kv_heads), each strictly descending. Each slot of a list gets that
  // list's heads of the newest cached token, moved through `pool`; a page
  // left empty is freed and digests of rewritten pages are dropped
  // (`digest_slot_bytes` per page). INVALID_ARGUMENT, changing nothing, for a
  // bad list; FAILED_PRECONDITION, changing nothing, for a quantized pool
  // (a row's scales would not move with it).
  absl::Status EvictTokens(PagePool& pool, absl::Span<const uint32_t> token_slots,
                           uint32_t n_lists, size_t digest_slot_bytes);
  // The cached tokens in slot order as fp32, k (and v unless null)
  // [n_tokens][n_kv_heads][head_dim]. FAILED_PRECONDITION when a page is
  // not resident.
  absl::Status ReadTokens(const PagePool& pool, std::vector<float>* k,
                          std::vector<float>* v) const;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_CACHE_PAGE_TABLE_H_
