// Store: the tiered page store core (host-RAM tier, then RocksDB on disk).
//
// It knows pages, keys, tiers, pins and leases, and nothing of models,
// policies or RPC: the gRPC service (kvstore/service/service.h) is a thin adapter
// over this class.
//
// Lifecycle of a page:
//   Reserve -> (caller writes bytes into the reserved RAM slot) -> Commit.
//   A reserved page is invisible to Lookup and Get until its batch commits;
//   Abort (or destroying an uncommitted Reservation) releases the space.
//   Committed pages live in RAM and/or on disk. Past the RAM tier's high
//   watermark the eviction policy picks victims that are demoted to disk
//   until usage is under the low watermark; past the disk tier's high
//   watermark unpinned disk pages are dropped. A pinned page is demoted,
//   never dropped. A disk page read often enough is promoted back to RAM
//   (the admission filter: a single scan cannot flush the hot set).
//   Every read verifies the page checksum; a corrupt page is dropped,
//   counted and reported as lost, never returned.
//   Pages on disk survive a restart: Open() rebuilds the index from RocksDB.
//
// Persistence: a put is not written through. A page reaches RocksDB when it
// is demoted, and only pages on disk survive a restart; pages that were in
// the RAM tier alone are gone after it (the store is a cache, and writing
// every put twice would halve put bandwidth). A page read back into RAM
// keeps its disk copy, so leaving RAM again costs no write.
//
// Making room happens in the call that needs it: a Reserve that takes RAM
// past its high watermark demotes (writes to disk) down to the low watermark
// before it returns; a demotion that takes the disk past its high watermark
// first drops unpinned disk pages down to the disk's low watermark. When the
// disk cannot take a page even then, an unpinned RAM page is dropped and a
// pinned one stays in RAM. Promotion (StoreOptions::promote_after_reads)
// only displaces RAM pages that are already on disk and never fills RAM past
// its high watermark.
//
// Tenant quotas (StoreOptions::tenant_max_ram_bytes, tenant_max_disk_bytes,
// SetTenantQuotas) make room the same way within one tenant: a put that
// would take its tenant past its RAM quota first demotes that tenant's own
// unpinned RAM pages (or drops them when the disk cannot take them); a
// demotion past its disk quota first drops that tenant's own unpinned disk
// pages. Another tenant's pages are never moved for it. A promotion past the
// RAM quota frees only the tenant's own unpinned pages already on disk, or
// does not happen (the read is served from disk).
//
// Thread-safety: all methods are thread-safe.
#ifndef KVTIER_KVSTORE_CORE_STORE_H_
#define KVTIER_KVSTORE_CORE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/clock.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "kvstore/core/pin_id.h"
#include "kvstore/core/ram_arena.h"

namespace kvtier::store {

class CacheEventLog;

enum class Tier : uint8_t { kNone = 0, kRam = 1, kDisk = 2 };

struct TierOptions {
  uint64_t capacity_bytes = 0;
  // Past high_watermark * capacity, pages leave the tier until usage is at
  // most low_watermark * capacity. REQUIRES: 0 < low <= high <= 1.
  double high_watermark = 0.90;
  double low_watermark = 0.80;
  // Eviction policy: "lru" or "s3fifo".
  std::string policy = "lru";
};

// One tenant's quotas (PageKey::tenant); 0 is no quota. StoreOptions'
// tenant_max_* are every tenant's unless Store::SetTenantQuotas gives it
// its own.
struct TenantQuotas {
  uint64_t max_ram_bytes = 0;
  uint64_t max_disk_bytes = 0;
  uint32_t max_pins = 0;
  uint64_t max_pinned_bytes = 0;

  friend bool operator==(const TenantQuotas&, const TenantQuotas&) = default;
};

struct StoreOptions {
  // RocksDB lives here; created if missing.
  std::string data_dir = "kvtier-data";
  TierOptions ram{.capacity_bytes = uint64_t{1} << 30};
  TierOptions disk{.capacity_bytes = uint64_t{8} << 30};
  // Largest number of pages in one Put/Get/Delete/Pin batch.
  uint32_t max_batch_pages = 1024;
  // Largest key chain one Lookup accepts.
  uint32_t max_lookup_pages = 65536;
  // Most (page, layer) entries one Lookup asks for: chain length times
  // layer count, checked before any work. Default 2^20 (a 32K-token prompt
  // in pages of 32 over 1024 layers, or 64K pages over 16 layers).
  uint32_t max_lookup_entries = uint32_t{1} << 20;
  // A disk-only page is copied back to RAM on its Nth read while on disk.
  // 1 promotes on every read.
  uint32_t promote_after_reads = 2;
  uint64_t max_pin_ttl_ms = 24 * 3600 * 1000;
  // Most live pins at once; Pin creating one more answers
  // RESOURCE_EXHAUSTED. Bounds the pin table's memory.
  uint32_t max_pins = 1 << 20;
  // Quotas of each tenant (PageKey::tenant): live pins, and bytes of its
  // pages that are pinned. Past either a Pin of that tenant answers
  // RESOURCE_EXHAUSTED and pins nothing; other tenants are not affected.
  // Default 0: no quota (max_pins alone bounds the pins).
  uint32_t tenant_max_pins = 0;
  uint64_t tenant_max_pinned_bytes = 0;
  // Byte quotas of each tenant in each tier, counted as the tier caps count
  // (TierStats::used_bytes): RAM, the slab bytes of its pages and of its
  // reservations; disk, the page bytes of its pages, demotions in flight
  // included. A put (or promotion) that would take a tenant past its quota
  // first makes room from that tenant's own unpinned pages, in policy
  // order; when they cannot make it, the put answers RESOURCE_EXHAUSTED
  // (and a promotion does not happen). Other tenants' pages are never
  // moved for it. Default 0: no quota (the tier caps alone bound a tenant).
  uint64_t tenant_max_ram_bytes = 0;
  uint64_t tenant_max_disk_bytes = 0;
  // Verify the checksum of every disk page found at Open, in a background
  // thread: the store serves meanwhile (every read verifies its page
  // anyway), and a page that fails is dropped and counted lost.
  // StoreStats::unverified_disk_pages shows the progress.
  bool verify_on_open = true;
  // Commit the RAM tier's memory at Open instead of on each slot's first
  // write (RamArena::Create's `prefault`).
  bool prefault_ram = false;
  // Not owned; must outlive the Store. Null means Clock::Real().
  Clock* clock = nullptr;
  // Not owned; must outlive the Store. The store appends every page it
  // stores and removes to it (cache_events.h). Null: no events.
  CacheEventLog* events = nullptr;
  // Where the RAM tier's memory comes from; empty: anonymous memory. The
  // UCX data plane supplies memory its shared-memory transports can write
  // and read one-sidedly (kvstore/dataplane/ucx_arena_memory.h).
  ArenaMemoryProvider ram_memory;

  // INVALID_ARGUMENT naming the first bad option.
  absl::Status Validate() const;
  // The tenant_max_* above: the quotas of a tenant without its own.
  TenantQuotas DefaultTenantQuotas() const;
};

// What a writer declares for one page before sending its bytes.
struct PutSpec {
  PageKey key;
  PageLayout layout;
  uint64_t checksum = 0;  // XXH3-64 of the bytes (common/checksum.h)
};

// INVALID_ARGUMENT unless `specs` is a batch every Store accepts for
// Reserve: 1..max_batch_pages pages, valid layouts, no key twice.
absl::Status ValidatePutSpecs(absl::Span<const PutSpec> specs, uint32_t max_batch_pages);

struct PutResult {
  // The key was stored when the batch was reserved, or was committed by a
  // concurrent put before this batch committed; its bytes were not written.
  bool already_present = false;
};

struct GetResult {
  // OK, NOT_FOUND, or DATA_LOSS (the page failed its checksum and was dropped).
  absl::Status status;
  PageLayout layout;
  uint64_t checksum = 0;
  Tier tier = Tier::kNone;  // tier the page was served from
  std::string data;
};

struct LookupResult {
  uint32_t prefix_pages = 0;
  // tiers[page * layer_count + (layer - layer_begin)] for every chain page.
  std::vector<Tier> tiers;
};

struct TierStats {
  uint64_t pages = 0;
  // RAM: slab bytes of allocated slots, reserved (uncommitted) ones
  // included. Disk: page bytes, demotions in flight included.
  uint64_t used_bytes = 0;
  uint64_t capacity_bytes = 0;
  uint64_t high_watermark_bytes = 0;
  uint64_t low_watermark_bytes = 0;
  uint64_t hits = 0;
  uint64_t evictions = 0;
  uint64_t pinned_pages = 0;
  // Page bytes that entered the tier (RAM: puts and promotions; disk:
  // demotions and pin write-throughs) and that reads were served from it.
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

// One tenant's share of the tiers. Bytes are counted as the tiers count
// them (TierStats::used_bytes), so ram_bytes includes its reservations;
// pages are committed pages. The RAM of ended reservations in quarantine,
// and of removed pages still being read, counts in the tier but in no
// tenant.
struct TenantStats {
  uint64_t tenant = 0;  // PageKey::tenant
  uint64_t ram_bytes = 0;
  uint64_t disk_bytes = 0;
  uint64_t ram_pages = 0;
  uint64_t disk_pages = 0;
  uint64_t pins = 0;
  uint64_t pinned_bytes = 0;
  TenantQuotas quotas;  // in effect
  // Puts refused because they would have taken the tenant past a quota.
  uint64_t quota_refusals = 0;
};

// A stored page and, when pinned, when its last pin ends (Unix ms; 0: not
// pinned): what a cluster node copies to a page's new owner.
struct HeldPage {
  PageKey key;
  int64_t pin_expiry_ms = 0;
};

struct StoreStats {
  TierStats ram;
  TierStats disk;
  uint64_t put_pages = 0;
  uint64_t put_duplicate_pages = 0;
  uint64_t get_misses = 0;
  uint64_t lost_pages = 0;
  uint64_t demotions = 0;
  uint64_t promotions = 0;
  uint64_t dropped_pages = 0;
  uint64_t reserved_bytes = 0;
  // RAM of reservations that ended uncommitted, held back from reuse for
  // their release delay (ReserveOptions).
  uint64_t quarantined_bytes = 0;
  uint64_t active_pins = 0;
  uint64_t lookups = 0;
  // Disk pages found at Open that the background check (verify_on_open)
  // has not read yet; 0 once it is done.
  uint64_t unverified_disk_pages = 0;
  // Files of a damaged data directory set aside at start, in
  // data_dir/quarantine/ (RocksTier::Open); 0 when it opened as it was.
  uint64_t set_aside_files = 0;
  // The data directory's size on disk as last measured, and its bound
  // (1.1 x the disk cap + 64 MiB, less a margin; rocks_tier.h, "Space").
  uint64_t data_dir_bytes = 0;
  uint64_t data_dir_bound_bytes = 0;
  // Pages the disk tier refused because the directory was at its bound
  // (they were dropped like pages the disk has no room for, or kept in RAM
  // when pinned), and rewrites of old blob files that freed its garbage.
  uint64_t disk_space_refusals = 0;
  uint64_t disk_garbage_collections = 0;
  // Every tenant with pages, reservations, pins, quota refusals or quotas
  // of its own, by ascending tag.
  std::vector<TenantStats> tenants;
};

class Store;

// How the slots of one reservation may be written.
struct ReserveOptions {
  // Slots that end uncommitted (abort, a failed commit, a reservation
  // dropped) return to the free lists only this long later, unused
  // meanwhile: a writer the store cannot stop (a data-plane client copying
  // into its mapping of the arena) may still be writing them, and its late
  // bytes must land in no other page. Default 0: at once. Must be >= 0.
  absl::Duration release_delay = absl::ZeroDuration();
  // False: this call does no disk I/O. A batch that would take RAM past its
  // high watermark, or a tenant past its RAM quota (and so make room by
  // writing pages to disk) is
  // FAILED_PRECONDITION instead, with nothing reserved; the caller sends it
  // again from a thread that may wait on the disk. For callers that must
  // not block, such as the data plane's progress thread. Default true.
  bool make_room = true;
};

// The RAM slots of one reserved batch. Move-only. Destroying an uncommitted
// Reservation aborts it. REQUIRES: the Store outlives it.
class Reservation {
 public:
  Reservation() = default;
  Reservation(Reservation&& other) noexcept;
  Reservation& operator=(Reservation&& other) noexcept;
  Reservation(const Reservation&) = delete;
  Reservation& operator=(const Reservation&) = delete;
  ~Reservation();

  size_t size() const { return specs_.size(); }
  const PutSpec& spec(size_t i) const { return specs_[i]; }
  // Where page i's bytes go; empty when the key was already stored (nothing
  // needs to be written for it).
  absl::Span<uint8_t> buffer(size_t i) const { return buffers_[i]; }
  // Declares page i's checksum after its bytes were written, for a writer
  // that hashes while it copies; Commit verifies against it.
  // REQUIRES: i < size().
  void set_checksum(size_t i, uint64_t checksum) { specs_[i].checksum = checksum; }

 private:
  friend class Store;
  Store* store_ = nullptr;
  uint64_t id_ = 0;
  std::vector<PutSpec> specs_;
  std::vector<absl::Span<uint8_t>> buffers_;
  // Every buffer was written and hashed by the store itself (BatchPut), so
  // Commit need not read them again.
  bool verified_ = false;
};

class Store {
 public:
  // Largest layer_count one Lookup accepts (bounds the size of its answer).
  static constexpr uint32_t kMaxLookupLayers = 4096;

  // Opens (creating if needed) the store under options.data_dir and rebuilds
  // the index from RocksDB. INVALID_ARGUMENT for bad options; the RocksDB
  // error (converted) when the directory cannot be opened.
  static absl::StatusOr<std::unique_ptr<Store>> Open(const StoreOptions& options);

  virtual ~Store() = default;

  // Longest stored prefix of `chain` over layers [layer_begin,
  // layer_begin + max(layer_count, 1)), and every (page, layer)'s tier.
  // INVALID_ARGUMENT when the chain exceeds max_lookup_pages or chain x
  // layers exceeds max_lookup_entries.
  // The chain's pages are `tenant`'s (PageKey::tenant).
  virtual absl::StatusOr<LookupResult> Lookup(uint64_t tenant, absl::Span<const Hash128> chain,
                                              uint32_t layer_begin, uint32_t layer_count) = 0;

  // Phase one of a put: validates every spec (INVALID_ARGUMENT: empty,
  // too many, bad layout, duplicate key) and reserves RAM for the pages not
  // yet stored, demoting or dropping unpinned pages to make room
  // (RESOURCE_EXHAUSTED when that cannot be done; nothing stays reserved).
  // The reserved slots count in their tenants' RAM bytes at once, so that
  // reservations never take a tenant past its RAM quota; a tenant that
  // would pass it makes room from its own unpinned RAM pages first, and
  // gets RESOURCE_EXHAUSTED naming the quota when they cannot make it
  // (FAILED_PRECONDITION instead when ReserveOptions.make_room is false).
  // INVALID_ARGUMENT also for a negative release delay.
  virtual absl::StatusOr<Reservation> Reserve(absl::Span<const PutSpec> specs,
                                              const ReserveOptions& options) = 0;
  absl::StatusOr<Reservation> Reserve(absl::Span<const PutSpec> specs) {
    return Reserve(specs, ReserveOptions());
  }
  // Phase two: verifies every written page against its checksum (DATA_LOSS
  // and nothing committed on a mismatch) and makes the batch visible at once.
  // A page that was stored at Reserve (no slot, nothing written) and has
  // since been deleted or dropped makes the commit ABORTED with nothing
  // committed: the store never reports a page present that it does not
  // hold. The caller puts the batch again.
  virtual absl::StatusOr<std::vector<PutResult>> Commit(Reservation reservation) = 0;
  // Releases a reservation without committing anything.
  virtual void Abort(Reservation reservation) = 0;

  // Reserve + copy + Commit, again from Reserve when Commit is ABORTED (a
  // few rounds). `data[i]` must be exactly specs[i].layout's byte count
  // (INVALID_ARGUMENT otherwise; nothing stored).
  absl::StatusOr<std::vector<PutResult>> BatchPut(absl::Span<const PutSpec> specs,
                                                  absl::Span<const absl::Span<const uint8_t>> data);
  // Reserve + `fill` + Commit, likewise, for bytes the store cannot read
  // itself (another process's memory, a remote region): `fill` writes the
  // reserved buffers (Reservation::buffer; empty ones need nothing), and
  // Commit verifies every page against its checksum. An error of `fill`
  // aborts the reservation and is returned.
  using FillFn = absl::FunctionRef<absl::Status(const Reservation& reservation)>;
  absl::StatusOr<std::vector<PutResult>> BatchPutFilled(absl::Span<const PutSpec> specs,
                                                        FillFn fill);

  // One result per key. INVALID_ARGUMENT for an empty or oversized batch.
  virtual absl::StatusOr<std::vector<GetResult>> BatchGet(absl::Span<const PageKey> keys) = 0;

  // The bytes a read of `keys` would return now, by where they lie: for
  // admission control before the read (absent keys count 0). A key listed
  // twice counts twice.
  struct StoredBytes {
    uint64_t ram = 0;        // pages in RAM (and possibly on disk too)
    uint64_t disk_only = 0;  // pages a read must fetch from disk
  };
  virtual StoredBytes BytesOf(absl::Span<const PageKey> keys) const = 0;

  // Who checks RAM pages read in place. kCaller: the store hands them over
  // without hashing them (they count as OK); the caller checks them against
  // results[i].checksum, e.g. a client that copies them itself and asks
  // again through a verifying read on a mismatch, which drops a corrupt
  // page. Disk pages are always checked.
  enum class RamCheck { kStore, kCaller };
  struct InPlaceOptions {
    RamCheck ram_check = RamCheck::kStore;
    // Disk pages are not read: they come back OK with their layout,
    // checksum and tier kDisk but no bytes (bytes[i] empty), and the read
    // neither counts toward their promotion nor promotes them.
    bool skip_disk = false;
  };
  // BatchGetInPlace's callback: one result per key and, for every OK page,
  // its verified bytes (empty for the others).
  using InPlaceUse = absl::FunctionRef<absl::Status(
      absl::Span<const GetResult> results, absl::Span<const absl::Span<const uint8_t>> bytes)>;
  // BatchGet without copying RAM pages: a page in RAM is read where it lies
  // (checksum verified) and stays leased, allocated and unchanged, even if
  // it is deleted or evicted meanwhile, until `use` returns; bytes[i] points
  // at it and results[i].data stays empty. Disk pages come back with their
  // data, as from BatchGet, and bytes[i] points into it. `use` runs exactly
  // once, without the store's lock (it may call the store), and its error
  // is returned after the leases are released; the spans are invalid once
  // it returns. The same errors as BatchGet (then `use` is not called).
  // The default copies, like BatchGet; TieredStore reads in place.
  absl::StatusOr<std::vector<GetResult>> BatchGetInPlace(absl::Span<const PageKey> keys,
                                                         InPlaceUse use) {
    return BatchGetInPlace(keys, use, InPlaceOptions());
  }
  virtual absl::StatusOr<std::vector<GetResult>> BatchGetInPlace(absl::Span<const PageKey> keys,
                                                                 InPlaceUse use,
                                                                 const InPlaceOptions& options);

  // Deletes stored keys; returns how many were stored. FAILED_PRECONDITION
  // if any key is pinned and !force (nothing deleted).
  virtual absl::StatusOr<uint32_t> Delete(absl::Span<const PageKey> keys, bool force) = 0;

  // Creates (pin_id zero) or extends `tenant`'s pin over `keys`, which must
  // all be `tenant`'s (INVALID_ARGUMENT otherwise); returns its id. A
  // pinned page held only in RAM is written to disk before Pin returns
  // (write-through), so an acknowledged pin's pages survive a restart or a
  // killed process (the pin itself does not: clients pin again).
  // INVALID_ARGUMENT (ttl_ms 0 or above max_pin_ttl_ms, too many keys),
  // NOT_FOUND (a key not stored, pin_id unknown, expired or another
  // tenant's; nothing pinned),
  // RESOURCE_EXHAUSTED (max_pins live pins already, the tenant's pin quotas
  // reached (StoreOptions::tenant_max_*), or the disk tier is full
  // of pinned pages; nothing pinned), UNAVAILABLE (a disk write failed;
  // nothing pinned).
  virtual absl::StatusOr<PinId> Pin(uint64_t tenant, absl::Span<const PageKey> keys,
                                    uint64_t ttl_ms, const PinId& pin_id) = 0;
  // NOT_FOUND when `tenant` has no such pin (unknown, expired or another
  // tenant's: the same answer).
  virtual absl::Status Unpin(uint64_t tenant, const PinId& pin_id) = 0;

  // Writes pages held only in RAM to disk, in batches, until none is left
  // or `deadline` passes, so that a graceful shutdown keeps them (pinned
  // pages are on disk already). The disk makes room as for any demotion;
  // pages it cannot take stay RAM-only. Pages stay in RAM too. Returns how
  // many were written; UNAVAILABLE when a disk write fails.
  virtual absl::StatusOr<uint64_t> DemoteAll(absl::Time deadline) = 0;

  virtual StoreStats Stats() const = 0;

  // Every committed page (or, with `pinned_only`, every page with a live
  // pin), with its latest pin's expiry, in no order. O(pages) under the
  // store's lock.
  virtual std::vector<HeldPage> HeldPages(bool pinned_only) const = 0;

  // Replaces every tenant's own quotas: tenants absent from `quotas` get
  // StoreOptions' defaults. A quota lowered below a tenant's usage deletes
  // nothing at once; the tenant's next put makes room or is refused.
  virtual void SetTenantQuotas(absl::flat_hash_map<uint64_t, TenantQuotas> quotas) = 0;

  // The RAM tier's memory: reserved buffers (Reservation::buffer) lie inside
  // it. Fixed for the store's life, so a data plane registers it once and
  // addresses slots by their offset from its start. Empty when the store
  // has no such region.
  virtual absl::Span<uint8_t> RamRegion() const { return {}; }

 protected:
  // For implementations: Reservation's fields are private to Store.
  static Reservation MakeReservation(Store* store, uint64_t id, std::vector<PutSpec> specs,
                                     std::vector<absl::Span<uint8_t>> buffers);
  static uint64_t ReservationId(const Reservation& r) { return r.id_; }
  // The store an uncommitted reservation belongs to; null once committed,
  // aborted or moved from.
  static const Store* ReservationOwner(const Reservation& r) { return r.store_; }
  static void DisarmReservation(Reservation& r) { r.store_ = nullptr; }
  // Whether BatchPut wrote and verified every buffer itself.
  static bool ReservationVerified(const Reservation& r) { return r.verified_; }
  // Called by ~Reservation for an uncommitted reservation.
  virtual void AbortById(uint64_t reservation_id) = 0;
  friend class Reservation;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_STORE_H_
