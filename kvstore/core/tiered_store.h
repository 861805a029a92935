// TieredStore: the Store implementation (RAM arena, then RocksDB).
//
// Locking: one mutex, mu_, guards the index, the arena's allocator, both
// eviction policies, the pin table, reservations and counters (page_index.h
// says why it is not sharded). Page bytes are never copied, hashed or
// written under mu_:
//   put:     Reserve allocates slots under mu_; the caller writes them;
//            Commit hashes them without mu_ and publishes under mu_.
//   get:     a RAM read takes a lease (entry.readers) under mu_, copies and
//            hashes without it (BatchGetInPlace: hashes, and the caller
//            uses the bytes where they lie), and returns the lease under
//            mu_; a disk read needs no lease (RocksDB reads are snapshot
//            reads).
//   demote:  victims are leased under mu_, written to RocksDB without it,
//            and their slots freed under mu_.
//   promote: a slot is allocated under mu_, filled without it, attached
//            under mu_.
// RocksDB deletes (small tombstone writes) are issued under mu_ so that the
// index and the disk never disagree about a dropped page.
//
// Open verifies the disk pages it found in a background thread
// (VerifyDiskPages): it reads each page without mu_ and drops a bad one
// under mu_ only if the entry is still the one it read (its generation).
//
// Demotion is synchronous: the Reserve that finds RAM past its high
// watermark demotes down to the low watermark before it returns (one with
// ReserveOptions.make_room false refuses instead). Promotion
// only evicts RAM pages that are already on disk (no write on the read
// path) and never fills RAM past the high watermark.
//
// Tenants (tiered_store_tenants.cc): tenant_bytes_ holds each tenant's
// bytes in each tier, counted as the tier caps count them: RAM, the slab
// bytes of its committed RAM pages, of its pending reservations' slots and
// of promotion slots not yet attached (all allocated in the arena); disk,
// the page bytes of its pages on disk and of its demotions in flight (the
// bytes ReserveDiskLocked charged). A slot leaves its tenant's share when
// its page or reservation ends, even if it stays allocated a while longer
// (quarantine_, zombie_slots_). Every change of arena_->used_bytes() or
// disk_used_bytes_ for a page changes its tenant's figure with it. A
// reservation counts when it is reserved, so reservations cannot take a
// tenant past its quota. Making room within one tenant's quota walks the
// tier's policy past every other tenant's pages (EvictionPolicy::Evict's
// skip): its cost grows with the tier's page count, not the tenant's.
#ifndef KVTIER_KVSTORE_CORE_TIERED_STORE_H_
#define KVTIER_KVSTORE_CORE_TIERED_STORE_H_

#include <deque>
#include <memory>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/eviction/eviction_policy.h"
#include "kvstore/core/page_index.h"
#include "kvstore/core/pin_table.h"
#include "kvstore/core/ram_arena.h"
#include "kvstore/core/rocks_tier.h"
#include "kvstore/core/store.h"

namespace kvtier::store {

class TieredStore final : public Store {
 public:
  // REQUIRES: options.Validate().ok().
  static absl::StatusOr<std::unique_ptr<TieredStore>> Open(const StoreOptions& options);
  ~TieredStore() override;

  absl::StatusOr<LookupResult> Lookup(uint64_t tenant, absl::Span<const Hash128> chain,
                                      uint32_t layer_begin, uint32_t layer_count) override;
  using Store::Reserve;
  absl::StatusOr<Reservation> Reserve(absl::Span<const PutSpec> specs,
                                      const ReserveOptions& options) override;
  absl::StatusOr<std::vector<PutResult>> Commit(Reservation reservation) override;
  void Abort(Reservation reservation) override;
  absl::StatusOr<std::vector<GetResult>> BatchGet(absl::Span<const PageKey> keys) override;
  using Store::BatchGetInPlace;
  absl::StatusOr<std::vector<GetResult>> BatchGetInPlace(absl::Span<const PageKey> keys,
                                                         InPlaceUse use,
                                                         const InPlaceOptions& options) override;
  absl::StatusOr<uint32_t> Delete(absl::Span<const PageKey> keys, bool force) override;
  absl::StatusOr<PinId> Pin(uint64_t tenant, absl::Span<const PageKey> keys, uint64_t ttl_ms,
                            const PinId& pin_id) override;
  absl::Status Unpin(uint64_t tenant, const PinId& pin_id) override;
  absl::StatusOr<uint64_t> DemoteAll(absl::Time deadline) override ABSL_LOCKS_EXCLUDED(mu_);
  StoredBytes BytesOf(absl::Span<const PageKey> keys) const override ABSL_LOCKS_EXCLUDED(mu_);
  StoreStats Stats() const override;
  std::vector<HeldPage> HeldPages(bool pinned_only) const override;
  void SetTenantQuotas(absl::flat_hash_map<uint64_t, TenantQuotas> quotas) override
      ABSL_LOCKS_EXCLUDED(mu_);
  // The arena's region never moves or grows, and capacity_bytes() is const
  // after construction, so no lock is needed.
  absl::Span<uint8_t> RamRegion() const override ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return {ram_base_, arena_->capacity_bytes()};
  }

 protected:
  void AbortById(uint64_t reservation_id) override;

 private:
  struct PendingReservation {
    std::vector<std::optional<RamArena::Slot>> slots;  // per spec; nullopt: already stored
    std::vector<uint64_t> tenants;  // per spec: its key's tenant
    uint64_t slot_bytes = 0;
    int64_t release_delay_us = 0;  // ReserveOptions::release_delay
  };
  // A tenant's bytes in each tier (the file comment says what counts).
  struct TenantBytes {
    uint64_t ram = 0;
    uint64_t disk = 0;
  };
  // A slot of an ended reservation, free again at release_us.
  struct QuarantinedSlot {
    RamArena::Slot slot;
    int64_t release_us = 0;
  };
  // One RAM page on its way to disk; holds a lease on its slot.
  struct Demotion {
    PageKey key;
    uint64_t generation = 0;
    PageMeta meta;
    RamArena::Slot slot;
  };
  // One BatchGet/BatchGetInPlace key between the locked phases.
  struct ReadItem {
    enum class Kind { kMiss, kRam, kDisk } kind = Kind::kMiss;
    uint64_t generation = 0;
    PageMeta meta;
    RamArena::Slot slot;
    bool promote = false;
    // False for a disk page a skip_disk read does not read: no hit counted.
    bool counted = true;
  };
  struct Promotion {
    size_t item = 0;  // index into the batch
    RamArena::Slot slot;
  };

  TieredStore(const StoreOptions& options, Clock* clock, std::unique_ptr<RamArena> arena,
              std::unique_ptr<RocksTier> rocks, std::unique_ptr<EvictionPolicy> ram_policy,
              std::unique_ptr<EvictionPolicy> disk_policy);

  // Builds the index from the pages RocksTier::Open found, and counts what
  // it lost to damage.
  void Recover(const RecoveryReport& found);
  // A disk page found at Open, as the index entry made for it.
  struct FoundPage {
    PageKey key;
    uint64_t generation = 0;
    PageMeta meta;
  };
  // Reads each page found at Open and drops those whose bytes fail their
  // checksum; stops early when the store is destroyed.
  void VerifyDiskPages(std::vector<FoundPage> pages) ABSL_LOCKS_EXCLUDED(mu_);
  uint64_t NextGeneration() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return next_generation_++; }
  // One round of Reserve: sets *reserved, or leases the demotions that make
  // room into *demotions (the caller completes them, then tries again), or
  // returns why the batch cannot be reserved.
  absl::Status ReserveRoundLocked(absl::Span<const PutSpec> specs,
                                  const ReserveOptions& reserve_options,
                                  std::vector<Demotion>* demotions,
                                  std::optional<Reservation>* reserved)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // tiered_store_room.cc: making room in either tier.
  // Allocates a slot for every new page (nullopt: key already stored), or
  // allocates nothing and returns false.
  bool AllocateSlotsLocked(absl::Span<const PutSpec> specs,
                           std::vector<std::optional<RamArena::Slot>>* slots)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Arena bytes (size classes) the pages of `specs` not yet stored need.
  uint64_t NewSlotBytesLocked(absl::Span<const PutSpec> specs) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts RAM pages until the arena's used bytes, less those of pages
  // already leaving, are at most `target_bytes`. Clean pages are freed at
  // once; dirty ones are leased and appended to *demotions; unpinned dirty
  // pages the disk cannot take are dropped. False when nothing could leave.
  // With `tenant`: only that tenant's unpinned pages leave, until its RAM
  // bytes less those leaving are at most `target_bytes`.
  bool EvictRamLocked(uint64_t target_bytes, std::vector<Demotion>* demotions,
                      std::optional<uint64_t> tenant = std::nullopt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks `entry` (RAM, dirty) as leaving for disk and leases its slot, so
  // its bytes stay in place until CompleteDemotions writes them. The
  // caller has reserved the disk bytes.
  Demotion LeaseForDemotionLocked(const PageKey& key, PageEntry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Undoes LeaseForDemotionLocked and the caller's disk reservation for a
  // demotion that will not be written.
  void CancelDemotionLocked(const Demotion& demotion) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes leased pages to RocksDB (without mu_), then frees their slots,
  // or with keep_in_ram leaves them in RAM as clean pages (a pin's
  // write-through). Returns the write's status (also logged).
  absl::Status CompleteDemotions(std::vector<Demotion> demotions, bool keep_in_ram = false)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Removes `added` keys from pin_id, or the whole pin when it was created
  // by the failing call; for a Pin that cannot keep its promise.
  void UndoPinLocked(uint64_t pin_id, bool created, absl::Span<const PageKey> added)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes pin_id from key's index entry, if the key is still stored.
  void UnlinkPinLocked(const PageKey& key, uint64_t pin_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds pin_id to an entry's pins; with its first pin the page's bytes
  // count in its tenant's pinned bytes (UnlinkPinLocked and
  // RemoveEntryLocked take them out again).
  void LinkPinLocked(const PageKey& key, PageEntry& entry, uint64_t pin_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UncountPinnedLocked(const PageKey& key, const PageEntry& entry)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED when pinning `keys` (all stored) would take their
  // tenant past a quota: one more pin (`new_pin`), or more pinned bytes.
  absl::Status CheckPinQuotasLocked(uint64_t tenant, absl::Span<const PageKey> keys,
                                    bool new_pin) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reserves `bytes` of disk for `key`'s page, charged to its tenant:
  // first drops unpinned disk pages past the disk high watermark, and the
  // tenant's own past its disk quota. False (nothing reserved) when the
  // disk cannot take them: full of pinned pages, the tenant's quota full of
  // its pinned pages, or the directory at its bound.
  bool ReserveDiskLocked(const PageKey& key, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops unpinned disk pages in policy order until the disk's page bytes
  // are at most target_bytes, or only pinned pages are left. With
  // `tenant`: only that tenant's, until its disk bytes are at most
  // target_bytes.
  void EvictDiskLocked(uint64_t target_bytes, std::optional<uint64_t> tenant = std::nullopt)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A slot for promoting `key`'s page of `bytes`, evicting only clean RAM
  // pages, staying under the RAM high watermark and within the tenant's
  // RAM quota (making room there from its own unpinned clean pages only).
  std::optional<RamArena::Slot> PromotionSlotLocked(const PageKey& key, uint64_t bytes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // tiered_store_tenants.cc: tenants' bytes, quotas and stats.
  TenantQuotas QuotasOfLocked(uint64_t tenant) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  TenantBytes BytesOfTenantLocked(uint64_t tenant) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Arena slab bytes entering or leaving `tenant`'s RAM share.
  void ChargeRamLocked(uint64_t tenant, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CreditRamLocked(uint64_t tenant, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Page bytes entering or leaving the disk, for disk_used_bytes_ and
  // `tenant`'s share together.
  void ChargeDiskLocked(uint64_t tenant, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CreditDiskLocked(uint64_t tenant, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reserve's quota step. Sets *fits when every tenant of `specs` has room
  // in its RAM quota for its new slots. Otherwise makes room from the
  // over-quota tenants' own pages (demotions leased into *demotions, for
  // the caller to complete before it tries again) and returns OK, or
  // returns RESOURCE_EXHAUSTED (counted as the tenant's refusal) when they
  // cannot, FAILED_PRECONDITION when room is needed and !make_room.
  absl::Status FitTenantQuotasLocked(absl::Span<const PutSpec> specs, bool make_room,
                                     std::vector<Demotion>* demotions, bool* fits)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The tenants' figures for Stats.
  // `pages`: each tenant's pages in RAM (first) and on disk (second), as
  // Stats counted them in its one walk of the index.
  std::vector<TenantStats> TenantStatsLocked(
      const absl::flat_hash_map<uint64_t, std::pair<uint64_t, uint64_t>>& pages) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Fills and attaches promoted slots (copies without mu_).
  void CompletePromotions(absl::Span<const PageKey> keys, absl::Span<const ReadItem> items,
                          absl::Span<const GetResult> results, std::vector<Promotion> promotions)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Ends a pending reservation without committing it: its slots go back to
  // the arena, or to the quarantine for its release delay unless
  // `writers_done` (a commit was asked for, so every writer had finished).
  void ReleaseReservationLocked(PendingReservation& pending, bool writers_done = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees the quarantined slots whose time has come.
  void ReleaseQuarantineLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // tiered_store.cc helpers.
  void SweepPinsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // tiered_store_pins.cc: pins recorded on disk. An expiry on the store's
  // clock as Unix milliseconds (a record must outlive the process).
  int64_t UnixMillisOf(int64_t expiry_ms) const;
  static absl::Status UnknownPinError(const PinId& public_id);
  // Recreates the pins recorded before a restart over the pages found;
  // expired ones are deleted, and no id recorded is ever given out again.
  void RestorePinsLocked(absl::Span<const StoredPin> stored) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleasePinLocked(uint64_t pin_id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes an entry from the index, its tiers' policies and its pins. The
  // caller deletes its RocksDB records first when it is on disk.
  void RemoveEntryLocked(PageIndex::iterator it) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns a RAM lease taken on (key, generation, slot).
  void ReleaseLeaseLocked(const PageKey& key, uint64_t generation, const RamArena::Slot& slot)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops a page whose bytes failed their checksum, if it is still the
  // entry that was read; false when that entry is gone already.
  bool DropLostLocked(const PageKey& key, uint64_t generation) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes `key`'s page out of RAM (its slot freed, or a zombie while read).
  void FreeRamLocked(const PageKey& key, PageEntry& entry) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // BatchGet and BatchGetInPlace: `use` null copies RAM pages into their
  // results; otherwise they are verified in place and handed to `use`
  // while their leases are held (hashed unless `check` is kCaller).
  absl::StatusOr<std::vector<GetResult>> ReadBatch(absl::Span<const PageKey> keys,
                                                   const InPlaceUse* use,
                                                   const InPlaceOptions& options)
      ABSL_LOCKS_EXCLUDED(mu_);
  // A read's first locked phase for one key: a lease for a RAM page, the
  // admission count for a disk page.
  // `count_disk_read` false: a disk page is not going to be read (skip_disk),
  // so neither its read count nor its policy sees this.
  ReadItem StartReadLocked(const PageKey& key, bool count_disk_read)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Reads one page without mu_ and verifies its checksum: a RAM page (under
  // its lease) is copied into result->data when `copy_ram`, else only
  // hashed where it lies (not even that with kCaller); a disk page is read
  // into result->data. Returns the bytes, empty unless result->status is OK.
  absl::Span<const uint8_t> ReadPage(const PageKey& key, const ReadItem& item, bool copy_ram,
                                     const InPlaceOptions& options, GetResult* result)
      ABSL_LOCKS_EXCLUDED(mu_);
  // For a page that failed its checksum: drops it, or turns the result into
  // NOT_FOUND when the entry read is gone already. Leases stay held.
  void ResolveLostLocked(const PageKey& key, const ReadItem& item, GetResult* result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The last locked phase: returns the lease, counts the hit, and returns a
  // slot when the page is to be promoted.
  std::optional<RamArena::Slot> FinishReadLocked(const PageKey& key, const ReadItem& item,
                                                 const GetResult& result)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Const after construction.
  const StoreOptions options_;
  Clock* const clock_;
  const uint64_t ram_high_bytes_;
  const uint64_t ram_low_bytes_;
  const uint64_t disk_high_bytes_;
  const uint64_t disk_low_bytes_;
  const TenantQuotas default_quotas_;  // options_.DefaultTenantQuotas()
  // The arena's region: slot bytes are read and written through it without
  // mu_ by whoever holds the slot (a reservation, a lease).
  uint8_t* const ram_base_;
  const std::unique_ptr<RocksTier> rocks_;  // thread-safe

  mutable absl::Mutex mu_;
  const std::unique_ptr<RamArena> arena_ ABSL_PT_GUARDED_BY(mu_);
  const std::unique_ptr<EvictionPolicy> ram_policy_ ABSL_PT_GUARDED_BY(mu_);
  const std::unique_ptr<EvictionPolicy> disk_policy_ ABSL_PT_GUARDED_BY(mu_);
  PageIndex index_ ABSL_GUARDED_BY(mu_);
  PinTable pins_ ABSL_GUARDED_BY(mu_);
  // Bytes of each tenant's pinned pages (tenants with none are absent).
  absl::flat_hash_map<uint64_t, uint64_t> pinned_bytes_ ABSL_GUARDED_BY(mu_);
  // Each tenant's bytes in the tiers (tenants with none are absent).
  absl::flat_hash_map<uint64_t, TenantBytes> tenant_bytes_ ABSL_GUARDED_BY(mu_);
  // Tenants' own quotas (SetTenantQuotas); the others have default_quotas_.
  absl::flat_hash_map<uint64_t, TenantQuotas> tenant_quotas_ ABSL_GUARDED_BY(mu_);
  // Puts refused for each tenant's quotas (tenants with none are absent).
  absl::flat_hash_map<uint64_t, uint64_t> quota_refusals_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, PendingReservation> reservations_ ABSL_GUARDED_BY(mu_);
  // In release order: every reservation's delay is its own, so a later one
  // may end sooner; released from the front while due, the rest wait.
  std::deque<QuarantinedSlot> quarantine_ ABSL_GUARDED_BY(mu_);
  // Slots of removed entries that readers still copy from: offset ->
  // (slot, readers). The last reader frees the slot.
  absl::flat_hash_map<uint64_t, std::pair<RamArena::Slot, uint32_t>> zombie_slots_
      ABSL_GUARDED_BY(mu_);
  uint64_t next_reservation_id_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  // Page bytes on disk, including demotions in flight.
  uint64_t disk_used_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Page bytes of demotions leased but not yet written (or failed).
  uint64_t demoting_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  // Counters; the per-tier page counts are computed by Stats().
  StoreStats counters_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;  // the destructor has begun
  std::thread verifier_;                         // VerifyDiskPages, if running
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_TIERED_STORE_H_
