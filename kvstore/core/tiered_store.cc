#include "kvstore/core/tiered_store.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kvstore/core/cache_events.h"

namespace kvtier::store {
namespace {

uint64_t WatermarkBytes(const TierOptions& tier, double fraction) {
  return static_cast<uint64_t>(static_cast<double>(tier.capacity_bytes) * fraction);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TieredStore>> TieredStore::Open(const StoreOptions& options) {
  ASSIGN_OR_RETURN(auto arena, RamArena::Create(options.ram.capacity_bytes, options.ram_memory,
                                                options.prefault_ram));
  RecoveryReport found;
  ASSIGN_OR_RETURN(auto rocks,
                   RocksTier::Open(options.data_dir,
                                   RocksTierOptions::ForCapacity(options.disk.capacity_bytes),
                                   &found));
  ASSIGN_OR_RETURN(auto ram_policy, MakeEvictionPolicy(options.ram.policy));
  ASSIGN_OR_RETURN(auto disk_policy, MakeEvictionPolicy(options.disk.policy));
  Clock* clock = options.clock != nullptr ? options.clock : Clock::Real();
  std::unique_ptr<TieredStore> store(new TieredStore(options, clock, std::move(arena),
                                                     std::move(rocks), std::move(ram_policy),
                                                     std::move(disk_policy)));
  store->Recover(found);
  return store;
}

TieredStore::TieredStore(const StoreOptions& options, Clock* clock,
                         std::unique_ptr<RamArena> arena, std::unique_ptr<RocksTier> rocks,
                         std::unique_ptr<EvictionPolicy> ram_policy,
                         std::unique_ptr<EvictionPolicy> disk_policy)
    : options_(options),
      clock_(clock),
      ram_high_bytes_(WatermarkBytes(options.ram, options.ram.high_watermark)),
      ram_low_bytes_(WatermarkBytes(options.ram, options.ram.low_watermark)),
      disk_high_bytes_(WatermarkBytes(options.disk, options.disk.high_watermark)),
      disk_low_bytes_(WatermarkBytes(options.disk, options.disk.low_watermark)),
      default_quotas_(options.DefaultTenantQuotas()),
      ram_base_(arena->base()),
      rocks_(std::move(rocks)),
      arena_(std::move(arena)),
      ram_policy_(std::move(ram_policy)),
      disk_policy_(std::move(disk_policy)) {}

TieredStore::~TieredStore() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (verifier_.joinable()) verifier_.join();
}

void TieredStore::Recover(const RecoveryReport& found) {
  std::vector<FoundPage> unverified;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, meta] : found.pages) {
      PageEntry& entry = index_[key];
      entry.meta = meta;
      entry.generation = NextGeneration();
      entry.on_disk = true;
      disk_policy_->OnInsert(key);
      ChargeDiskLocked(key.tenant, meta.bytes);
      if (options_.verify_on_open) unverified.push_back({key, entry.generation, meta});
    }
    RestorePinsLocked(found.pins);
    counters_.lost_pages += found.malformed_records + found.lost_pages;
    counters_.set_aside_files = found.quarantined_files;
    counters_.unverified_disk_pages = unverified.size();
    KVTIER_LOG(INFO) << "store recovered pages=" << found.pages.size()
                     << " disk_bytes=" << disk_used_bytes_
                     << " malformed=" << found.malformed_records
                     << (unverified.empty() ? "" : "; verifying disk pages in the background");
  }
  if (!unverified.empty()) {
    verifier_ = std::thread([this, pages = std::move(unverified)]() mutable {
      VerifyDiskPages(std::move(pages));
    });
  }
}

void TieredStore::VerifyDiskPages(std::vector<FoundPage> pages) {
  const absl::Time start = absl::Now();
  absl::Time last_report = start;
  uint64_t lost = 0;
  for (size_t i = 0; i < pages.size(); ++i) {
    const FoundPage& page = pages[i];
    absl::StatusOr<std::string> bytes = rocks_->Get(page.key);
    const bool unreadable =
        !bytes.ok() && !absl::IsDataLoss(bytes.status()) && !absl::IsNotFound(bytes.status());
    const bool good = bytes.ok() && bytes->size() == page.meta.bytes &&
                      PageChecksum(bytes->data(), bytes->size()) == page.meta.checksum;
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    --counters_.unverified_disk_pages;
    if (unreadable) {
      KVTIER_LOG(ERROR) << "cannot verify disk page " << page.key.DebugString() << ": "
                        << bytes.status() << "; its reads will check it";
    } else if (!good) {
      // Unless deleted, replaced or read (and judged) by a client meanwhile;
      // a page promoted meanwhile passed a verifying read and stays.
      auto it = index_.find(page.key);
      if (it != index_.end() && it->second.generation == page.generation &&
          it->second.on_disk && !it->second.in_ram && DropLostLocked(page.key, page.generation)) {
        ++lost;
      }
    }
    if (absl::Now() - last_report > absl::Seconds(10)) {
      last_report = absl::Now();
      KVTIER_LOG(INFO) << "verified " << i + 1 << " of " << pages.size() << " disk pages, lost "
                       << lost;
    }
  }
  KVTIER_LOG(INFO) << "verified " << pages.size() << " disk pages in "
                   << absl::FormatDuration(absl::Now() - start) << ", lost " << lost;
}

absl::StatusOr<LookupResult> TieredStore::Lookup(uint64_t tenant,
                                                 absl::Span<const Hash128> chain,
                                                 uint32_t layer_begin, uint32_t layer_count) {
  if (chain.size() > options_.max_lookup_pages) {
    return absl::InvalidArgumentError(absl::StrCat("lookup chain of ", chain.size(),
                                                   " pages exceeds ", options_.max_lookup_pages));
  }
  const uint32_t layers = std::max<uint32_t>(layer_count, 1);
  if (layers > kMaxLookupLayers || uint64_t{layer_begin} + layers > (uint64_t{1} << 32)) {
    return absl::InvalidArgumentError(
        absl::StrCat("lookup layers [", layer_begin, ", +", layers, ") out of range"));
  }
  if (uint64_t{chain.size()} * layers > options_.max_lookup_entries) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lookup of ", chain.size(), " pages x ", layers, " layers exceeds ",
        options_.max_lookup_entries, " entries"));
  }
  LookupResult result;
  result.tiers.resize(chain.size() * layers, Tier::kNone);
  {
    absl::MutexLock lock(&mu_);
    ++counters_.lookups;
  }
  // The index is read a bounded run of pages at a time, so one long lookup
  // never holds the store's lock for long; a page stored or removed
  // meanwhile is seen or not, as if the lookup had run a moment earlier or
  // later.
  constexpr size_t kEntriesPerLock = 4096;
  const size_t pages_per_lock = std::max<size_t>(1, kEntriesPerLock / layers);
  bool prefix_open = true;
  for (size_t begin = 0; begin < chain.size(); begin += pages_per_lock) {
    const size_t end = std::min(chain.size(), begin + pages_per_lock);
    absl::MutexLock lock(&mu_);
    for (size_t page = begin; page < end; ++page) {
      bool all_stored = true;
      for (uint32_t l = 0; l < layers; ++l) {
        auto it = index_.find(
            PageKey{.tenant = tenant, .hash = chain[page], .layer = layer_begin + l});
        Tier tier = Tier::kNone;
        if (it != index_.end()) tier = it->second.in_ram ? Tier::kRam : Tier::kDisk;
        result.tiers[page * layers + l] = tier;
        all_stored = all_stored && tier != Tier::kNone;
      }
      prefix_open = prefix_open && all_stored;
      if (prefix_open) result.prefix_pages = page + 1;
    }
  }
  return result;
}

absl::StatusOr<Reservation> TieredStore::Reserve(absl::Span<const PutSpec> specs,
                                                 const ReserveOptions& reserve_options) {
  RETURN_IF_ERROR(ValidatePutSpecs(specs, options_.max_batch_pages));
  if (reserve_options.release_delay < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("release_delay must be >= 0");
  }
  // Each round either reserves or makes progress evicting; concurrent puts
  // may take the room a round freed, hence a bounded retry.
  constexpr int kMaxRounds = 16;
  for (int round = 0; round < kMaxRounds; ++round) {
    std::vector<Demotion> demotions;
    std::optional<Reservation> reserved;
    absl::Status status;
    {
      absl::MutexLock lock(&mu_);
      status = ReserveRoundLocked(specs, reserve_options, &demotions, &reserved);
    }
    // Even when the round failed: what it leased must be written or given back.
    CompleteDemotions(std::move(demotions)).IgnoreError();  // logged; pages stay in RAM
    RETURN_IF_ERROR(status);
    if (reserved) return std::move(*reserved);
  }
  return absl::ResourceExhaustedError("no room: concurrent puts took every freed slot");
}

absl::Status TieredStore::ReserveRoundLocked(absl::Span<const PutSpec> specs,
                                             const ReserveOptions& reserve_options,
                                             std::vector<Demotion>* demotions,
                                             std::optional<Reservation>* reserved) {
  SweepPinsLocked();
  ReleaseQuarantineLocked();
  bool fits = false;
  RETURN_IF_ERROR(
      FitTenantQuotasLocked(specs, reserve_options.make_room, demotions, &fits));
  if (!fits) return absl::OkStatus();  // room is being made: another round
  if (!reserve_options.make_room &&
      arena_->used_bytes() + NewSlotBytesLocked(specs) > ram_high_bytes_) {
    return absl::FailedPreconditionError(
        "RAM is at its high watermark: making room writes to disk, which this caller may "
        "not wait for (put the batch by RPC)");
  }
  std::vector<std::optional<RamArena::Slot>> slots;
  if (AllocateSlotsLocked(specs, &slots)) {
    std::vector<absl::Span<uint8_t>> buffers(specs.size());
    PendingReservation pending;
    pending.tenants.resize(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      pending.tenants[i] = specs[i].key.tenant;
      if (!slots[i]) continue;
      buffers[i] = arena_->Bytes(*slots[i], specs[i].layout.PageBytes());
      const uint64_t slot_bytes = RamArena::ClassBytes(slots[i]->size_class);
      pending.slot_bytes += slot_bytes;
      ChargeRamLocked(specs[i].key.tenant, slot_bytes);
    }
    pending.slots = std::move(slots);
    pending.release_delay_us = absl::ToInt64Microseconds(reserve_options.release_delay);
    const uint64_t id = next_reservation_id_++;
    counters_.reserved_bytes += pending.slot_bytes;
    reservations_.emplace(id, std::move(pending));
    *reserved = MakeReservation(this, id, std::vector<PutSpec>(specs.begin(), specs.end()),
                                std::move(buffers));
    if (arena_->used_bytes() > ram_high_bytes_) EvictRamLocked(ram_low_bytes_, demotions);
    return absl::OkStatus();
  }
  if (!reserve_options.make_room) {
    // Under the watermark but too fragmented for the batch.
    return absl::FailedPreconditionError(
        "no free RAM slot without making room on disk (put the batch by RPC)");
  }
  const uint64_t need = NewSlotBytesLocked(specs);
  if (need > arena_->capacity_bytes()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "batch needs ", need, " bytes of RAM; the tier has ", arena_->capacity_bytes()));
  }
  const uint64_t target = ram_low_bytes_ > need ? ram_low_bytes_ - need : 0;
  if (!EvictRamLocked(target, demotions)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "no room for ", need, " bytes: RAM and disk hold only pinned or busy pages"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<PutResult>> TieredStore::Commit(Reservation reservation) {
  if (ReservationOwner(reservation) != this) {
    return absl::FailedPreconditionError("reservation is not pending in this store");
  }
  for (size_t i = 0; i < reservation.size() && !ReservationVerified(reservation); ++i) {
    absl::Span<uint8_t> bytes = reservation.buffer(i);
    if (bytes.empty()) continue;
    if (PageChecksum(bytes.data(), bytes.size()) != reservation.spec(i).checksum) {
      // `reservation` aborts itself when it goes out of scope.
      return absl::DataLossError(absl::StrCat("page ", i, " (",
                                              reservation.spec(i).key.DebugString(),
                                              "): bytes do not match the checksum"));
    }
  }
  const uint64_t id = ReservationId(reservation);
  DisarmReservation(reservation);
  absl::MutexLock lock(&mu_);
  auto pending = reservations_.find(id);
  if (pending == reservations_.end()) {
    return absl::FailedPreconditionError("reservation is not pending (committed or aborted)");
  }
  for (size_t i = 0; i < reservation.size(); ++i) {
    if (!pending->second.slots[i] && !index_.contains(reservation.spec(i).key)) {
      // Found stored at Reserve, so nothing was written for it, and removed
      // since: committing would report a page the store does not hold.
      // The caller's writes are over (it asked to commit): no quarantine.
      ReleaseReservationLocked(pending->second, /*writers_done=*/true);
      reservations_.erase(pending);
      return absl::AbortedError(absl::StrCat("page ", i, " (",
                                             reservation.spec(i).key.DebugString(),
                                             ") was removed after Reserve; put the batch again"));
    }
  }
  std::vector<PutResult> results(reservation.size());
  std::vector<PageKey> stored;
  if (options_.events != nullptr) stored.reserve(reservation.size());
  for (size_t i = 0; i < reservation.size(); ++i) {
    const PutSpec& spec = reservation.spec(i);
    const std::optional<RamArena::Slot>& slot = pending->second.slots[i];
    if (!slot || index_.contains(spec.key)) {
      // Stored before this batch reserved it (and still), or committed by a
      // concurrent put since: content-addressed, so the bytes are the same.
      if (slot) {
        arena_->Free(*slot);
        CreditRamLocked(spec.key.tenant, RamArena::ClassBytes(slot->size_class));
      }
      results[i].already_present = true;
      ++counters_.put_duplicate_pages;
      continue;
    }
    PageEntry& entry = index_[spec.key];
    entry.meta = PageMeta{.layout = spec.layout,
                          .bytes = spec.layout.PageBytes(),
                          .checksum = spec.checksum};
    entry.generation = NextGeneration();
    entry.in_ram = true;
    entry.slot = *slot;
    ram_policy_->OnInsert(spec.key);
    ++counters_.put_pages;
    counters_.ram.bytes_in += entry.meta.bytes;
    if (options_.events != nullptr) stored.push_back(spec.key);
  }
  if (options_.events != nullptr) options_.events->AppendAll(CacheEvent::Kind::kStored, stored);
  counters_.reserved_bytes -= pending->second.slot_bytes;
  reservations_.erase(pending);
  return results;
}

void TieredStore::Abort(Reservation reservation) {
  if (ReservationOwner(reservation) != this) return;  // its own store aborts it
  const uint64_t id = ReservationId(reservation);
  DisarmReservation(reservation);
  AbortById(id);
}

void TieredStore::AbortById(uint64_t reservation_id) {
  absl::MutexLock lock(&mu_);
  auto it = reservations_.find(reservation_id);
  if (it == reservations_.end()) return;
  ReleaseReservationLocked(it->second);
  reservations_.erase(it);
}

void TieredStore::ReleaseReservationLocked(PendingReservation& pending, bool writers_done) {
  const int64_t release_us = clock_->NowMicros() + pending.release_delay_us;
  for (size_t i = 0; i < pending.slots.size(); ++i) {
    const std::optional<RamArena::Slot>& slot = pending.slots[i];
    if (!slot) continue;
    // Quarantined or not, the slot is no longer its tenant's.
    CreditRamLocked(pending.tenants[i], RamArena::ClassBytes(slot->size_class));
    if (pending.release_delay_us == 0 || writers_done) {
      arena_->Free(*slot);
    } else {
      quarantine_.push_back(QuarantinedSlot{.slot = *slot, .release_us = release_us});
      counters_.quarantined_bytes += RamArena::ClassBytes(slot->size_class);
    }
  }
  counters_.reserved_bytes -= pending.slot_bytes;
  ReleaseQuarantineLocked();
}

void TieredStore::ReleaseQuarantineLocked() {
  const int64_t now_us = clock_->NowMicros();
  while (!quarantine_.empty() && quarantine_.front().release_us <= now_us) {
    arena_->Free(quarantine_.front().slot);
    counters_.quarantined_bytes -= RamArena::ClassBytes(quarantine_.front().slot.size_class);
    quarantine_.pop_front();
  }
}

absl::StatusOr<uint32_t> TieredStore::Delete(absl::Span<const PageKey> keys, bool force) {
  if (keys.size() > options_.max_batch_pages) {
    return absl::InvalidArgumentError(absl::StrCat("delete batch of ", keys.size(),
                                                   " keys exceeds ", options_.max_batch_pages));
  }
  absl::MutexLock lock(&mu_);
  SweepPinsLocked();
  std::vector<PageKey> on_disk;
  for (const PageKey& key : keys) {
    auto it = index_.find(key);
    if (it == index_.end()) continue;
    if (it->second.pinned() && !force) {
      return absl::FailedPreconditionError(
          absl::StrCat("page ", key.DebugString(), " is pinned; nothing deleted"));
    }
    if (it->second.on_disk) on_disk.push_back(key);
  }
  RETURN_IF_ERROR(rocks_->Delete(on_disk));
  uint32_t deleted = 0;
  for (const PageKey& key : keys) {
    auto it = index_.find(key);
    if (it == index_.end()) continue;
    RemoveEntryLocked(it);
    ++deleted;
  }
  return deleted;
}

StoreStats TieredStore::Stats() const {
  absl::MutexLock lock(&mu_);
  // Releasing expired pins changes nothing a caller could observe other
  // than through these figures, so Stats stays logically const.
  const_cast<TieredStore*>(this)->SweepPinsLocked();
  // Likewise slots whose quarantine is over, so that an idle store reports
  // none.
  const_cast<TieredStore*>(this)->ReleaseQuarantineLocked();
  StoreStats stats = counters_;
  // One walk of the index (under the lock: O(pages)) for the tiers' and
  // the tenants' page counts. Keys of one tenant mostly come in a row.
  absl::flat_hash_map<uint64_t, std::pair<uint64_t, uint64_t>> tenant_pages;
  uint64_t last_tenant = 0;
  std::pair<uint64_t, uint64_t>* pages = &tenant_pages[last_tenant];
  for (const auto& [key, entry] : index_) {
    if (key.tenant != last_tenant) {
      last_tenant = key.tenant;
      pages = &tenant_pages[last_tenant];
    }
    if (entry.in_ram) {
      ++stats.ram.pages;
      ++pages->first;
      if (entry.pinned()) ++stats.ram.pinned_pages;
    }
    if (entry.on_disk) {
      ++stats.disk.pages;
      ++pages->second;
      if (entry.pinned()) ++stats.disk.pinned_pages;
    }
  }
  stats.ram.used_bytes = arena_->used_bytes();
  stats.ram.capacity_bytes = arena_->capacity_bytes();
  stats.ram.high_watermark_bytes = ram_high_bytes_;
  stats.ram.low_watermark_bytes = ram_low_bytes_;
  stats.disk.used_bytes = disk_used_bytes_;
  stats.disk.capacity_bytes = options_.disk.capacity_bytes;
  stats.disk.high_watermark_bytes = disk_high_bytes_;
  stats.disk.low_watermark_bytes = disk_low_bytes_;
  stats.active_pins = pins_.size();
  stats.data_dir_bytes = rocks_->directory_bytes();
  stats.data_dir_bound_bytes = rocks_->directory_bound_bytes();
  stats.disk_garbage_collections = rocks_->garbage_collections();
  stats.tenants = TenantStatsLocked(tenant_pages);
  return stats;
}

void TieredStore::FreeRamLocked(const PageKey& key, PageEntry& entry) {
  CreditRamLocked(key.tenant, RamArena::ClassBytes(entry.slot.size_class));
  if (entry.readers > 0) {
    auto& zombie = zombie_slots_[entry.slot.offset];
    zombie.first = entry.slot;
    zombie.second = entry.readers;
  } else {
    arena_->Free(entry.slot);
  }
  entry.in_ram = false;
  entry.readers = 0;
}

void TieredStore::RemoveEntryLocked(PageIndex::iterator it) {
  const PageKey key = it->first;
  PageEntry& entry = it->second;
  for (uint64_t pin_id : entry.pin_ids) pins_.RemoveKey(pin_id, key);
  if (entry.pinned()) UncountPinnedLocked(key, entry);
  if (entry.in_ram) {
    ram_policy_->OnRemove(key);
    FreeRamLocked(key, entry);
  }
  if (entry.on_disk) {
    disk_policy_->OnRemove(key);
    CreditDiskLocked(key.tenant, entry.meta.bytes);
  }
  index_.erase(it);
  if (options_.events != nullptr) options_.events->Append(CacheEvent::Kind::kRemoved, key);
}

void TieredStore::ReleaseLeaseLocked(const PageKey& key, uint64_t generation,
                                     const RamArena::Slot& slot) {
  auto it = index_.find(key);
  if (it != index_.end() && it->second.generation == generation && it->second.in_ram &&
      it->second.readers > 0) {
    --it->second.readers;
    return;
  }
  auto zombie = zombie_slots_.find(slot.offset);
  if (zombie == zombie_slots_.end()) return;
  if (--zombie->second.second == 0) {
    arena_->Free(zombie->second.first);
    zombie_slots_.erase(zombie);
  }
}

bool TieredStore::DropLostLocked(const PageKey& key, uint64_t generation) {
  auto it = index_.find(key);
  if (it == index_.end() || it->second.generation != generation) return false;
  if (it->second.on_disk || it->second.demoting) {
    absl::Status s = rocks_->Delete({key});
    if (!s.ok()) {
      KVTIER_LOG(ERROR) << "cannot delete lost page " << key.DebugString() << ": " << s;
    }
  }
  KVTIER_LOG(WARNING) << "page " << key.DebugString() << " failed its checksum; dropped";
  ++counters_.lost_pages;
  RemoveEntryLocked(it);
  return true;
}

}  // namespace kvtier::store
