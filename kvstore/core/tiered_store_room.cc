// TieredStore: making room in the RAM and disk tiers (demotion, dropping,
// promotion).
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "kvstore/core/tiered_store.h"

namespace kvtier::store {

bool TieredStore::AllocateSlotsLocked(absl::Span<const PutSpec> specs,
                                      std::vector<std::optional<RamArena::Slot>>* slots) {
  slots->assign(specs.size(), std::nullopt);
  for (size_t i = 0; i < specs.size(); ++i) {
    if (index_.contains(specs[i].key)) continue;
    const uint64_t bytes = specs[i].layout.PageBytes();
    (*slots)[i] = arena_->Allocate(bytes);
    if (!(*slots)[i]) {
      for (const std::optional<RamArena::Slot>& slot : *slots) {
        if (slot) arena_->Free(*slot);
      }
      slots->clear();
      return false;
    }
  }
  return true;
}

uint64_t TieredStore::NewSlotBytesLocked(absl::Span<const PutSpec> specs) const {
  uint64_t bytes = 0;
  for (const PutSpec& spec : specs) {
    if (!index_.contains(spec.key)) {
      bytes += RamArena::ClassBytes(RamArena::ClassOf(spec.layout.PageBytes()));
    }
  }
  return bytes;
}

bool TieredStore::EvictRamLocked(uint64_t target_bytes, std::vector<Demotion>* demotions,
                                 std::optional<uint64_t> tenant) {
  bool progress = false;
  uint64_t leaving_bytes = 0;
  // Pinned dirty pages the disk cannot take this time; put back afterwards.
  std::vector<PageKey> kept;
  absl::flat_hash_set<PageKey> kept_set;
  // Within a tenant's quota only its own unpinned pages leave: the walk
  // passes over every other tenant's pages.
  auto skip = [&](const PageKey& key) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    if (tenant && key.tenant != *tenant) return true;
    const PageEntry& entry = index_.at(key);
    return entry.readers > 0 || entry.demoting || kept_set.contains(key) ||
           (tenant && entry.pinned());
  };
  auto used_bytes = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return tenant ? BytesOfTenantLocked(*tenant).ram : arena_->used_bytes();
  };
  while (used_bytes() - leaving_bytes > target_bytes) {
    std::optional<PageKey> victim = ram_policy_->Evict(skip);
    if (!victim) break;
    auto it = index_.find(*victim);
    PageEntry& entry = it->second;
    const uint64_t slot_bytes = RamArena::ClassBytes(entry.slot.size_class);
    if (entry.on_disk) {
      FreeRamLocked(*victim, entry);
      ++counters_.ram.evictions;
      progress = true;
    } else if (ReserveDiskLocked(*victim, entry.meta.bytes)) {
      leaving_bytes += slot_bytes;
      demotions->push_back(LeaseForDemotionLocked(*victim, entry));
      progress = true;
    } else if (!entry.pinned()) {
      // The disk is full of pinned pages, or its directory at its bound: an
      // unpinned page goes to nothing.
      ++counters_.ram.evictions;
      ++counters_.dropped_pages;
      RemoveEntryLocked(it);
      progress = true;
    } else {
      kept.push_back(*victim);
      kept_set.insert(*victim);
    }
  }
  for (const PageKey& key : kept) ram_policy_->OnInsert(key);
  return progress;
}

TieredStore::Demotion TieredStore::LeaseForDemotionLocked(const PageKey& key, PageEntry& entry) {
  entry.demoting = true;
  ++entry.readers;
  demoting_bytes_ += entry.meta.bytes;
  return Demotion{.key = key, .generation = entry.generation, .meta = entry.meta,
                  .slot = entry.slot};
}

void TieredStore::CancelDemotionLocked(const Demotion& d) {
  PageEntry& entry = index_.at(d.key);
  entry.demoting = false;
  --entry.readers;
  CreditDiskLocked(d.key.tenant, d.meta.bytes);
  demoting_bytes_ -= d.meta.bytes;
}

absl::Status TieredStore::CompleteDemotions(std::vector<Demotion> demotions, bool keep_in_ram) {
  if (demotions.empty()) return absl::OkStatus();
  std::vector<RocksTier::PageWrite> writes;
  writes.reserve(demotions.size());
  for (const Demotion& d : demotions) {
    // The demotion's lease keeps the slot's bytes in place during the write.
    writes.push_back(RocksTier::PageWrite{
        .key = d.key,
        .meta = d.meta,
        .bytes = absl::Span<const uint8_t>(ram_base_ + d.slot.offset, d.meta.bytes)});
  }
  const absl::Status written = rocks_->Put(writes);
  if (!written.ok()) {
    KVTIER_LOG(ERROR) << "demotion of " << writes.size() << " pages failed: " << written;
  }
  absl::MutexLock lock(&mu_);
  for (const Demotion& d : demotions) demoting_bytes_ -= d.meta.bytes;
  std::vector<PageKey> orphans;
  for (const Demotion& d : demotions) {
    auto it = index_.find(d.key);
    const bool same = it != index_.end() && it->second.generation == d.generation;
    if (!same) {
      // Removed while in flight: its disk reservation and lease are ours to
      // return, and its records (if written) ours to delete, unless a newer
      // put of the same key is on disk or on its way.
      CreditDiskLocked(d.key.tenant, d.meta.bytes);
      ReleaseLeaseLocked(d.key, d.generation, d.slot);
      if (written.ok() &&
          (it == index_.end() || (!it->second.on_disk && !it->second.demoting))) {
        orphans.push_back(d.key);
      }
      continue;
    }
    PageEntry& entry = it->second;
    entry.demoting = false;
    --entry.readers;
    if (!written.ok()) {
      CreditDiskLocked(d.key.tenant, d.meta.bytes);
      if (!keep_in_ram) ram_policy_->OnInsert(d.key);
      continue;
    }
    entry.on_disk = true;
    disk_policy_->OnInsert(d.key);
    ++counters_.demotions;
    counters_.disk.bytes_in += d.meta.bytes;
    if (keep_in_ram) continue;  // never left the RAM policy
    if (entry.readers == 0) {
      FreeRamLocked(d.key, entry);
      ++counters_.ram.evictions;
    } else {
      ram_policy_->OnInsert(d.key);  // still being read; now clean
    }
  }
  absl::Status s = rocks_->Delete(orphans);
  if (!s.ok()) {
    KVTIER_LOG(ERROR) << "cannot delete " << orphans.size() << " orphan pages: " << s;
  }
  return written;
}

void TieredStore::EvictDiskLocked(uint64_t target_bytes, std::optional<uint64_t> tenant) {
  // Within a tenant's quota the walk passes over every other tenant's pages.
  auto skip = [&](const PageKey& key) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return (tenant && key.tenant != *tenant) || index_.at(key).pinned();
  };
  auto used_bytes = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return tenant ? BytesOfTenantLocked(*tenant).disk : disk_used_bytes_;
  };
  while (used_bytes() > target_bytes) {
    std::optional<PageKey> victim = disk_policy_->Evict(skip);
    if (!victim) break;
    absl::Status s = rocks_->Delete({*victim});
    if (!s.ok()) {
      KVTIER_LOG(ERROR) << "cannot drop disk page " << victim->DebugString() << ": " << s;
      disk_policy_->OnInsert(*victim);
      break;
    }
    auto it = index_.find(*victim);
    ++counters_.disk.evictions;
    if (it->second.in_ram) {
      // Still in RAM: the page loses only its disk copy.
      it->second.on_disk = false;
      CreditDiskLocked(victim->tenant, it->second.meta.bytes);
    } else {
      ++counters_.dropped_pages;
      RemoveEntryLocked(it);
    }
  }
}

bool TieredStore::ReserveDiskLocked(const PageKey& key, uint64_t bytes) {
  // The tenant's quota first: when its own pages cannot make room, nobody
  // else's are dropped for nothing.
  if (const uint64_t quota = QuotasOfLocked(key.tenant).max_disk_bytes; quota != 0) {
    if (bytes > quota) return false;
    if (BytesOfTenantLocked(key.tenant).disk + bytes > quota) {
      EvictDiskLocked(quota - bytes, key.tenant);
    }
    if (BytesOfTenantLocked(key.tenant).disk + bytes > quota) return false;
  }
  if (disk_used_bytes_ + bytes > disk_high_bytes_) {
    EvictDiskLocked(disk_low_bytes_ > bytes ? disk_low_bytes_ - bytes : 0);
  }
  if (disk_used_bytes_ + bytes > options_.disk.capacity_bytes) return false;
  // Demotions reserved but not yet written are not in the directory yet.
  if (!rocks_->HasRoomFor(demoting_bytes_ + bytes)) {
    // The directory is at its bound until RocksDB drops or rewrites blob
    // files (rocks_tier.h, "Space"; the collector flushes and compacts
    // when the directory nears its bound, so that pages already evicted
    // free their bytes). Evicting more would not help before that.
    ++counters_.disk_space_refusals;
    return false;
  }
  ChargeDiskLocked(key.tenant, bytes);
  return true;
}

std::optional<RamArena::Slot> TieredStore::PromotionSlotLocked(const PageKey& key,
                                                               uint64_t bytes) {
  ReleaseQuarantineLocked();
  const uint64_t tenant = key.tenant;
  const uint64_t slot_bytes = RamArena::ClassBytes(RamArena::ClassOf(bytes));
  auto clean = [&](const PageKey& k) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    const PageEntry& entry = index_.at(k);
    return entry.on_disk && entry.readers == 0 && !entry.demoting;
  };
  if (const uint64_t quota = QuotasOfLocked(tenant).max_ram_bytes; quota != 0) {
    if (slot_bytes > quota) return std::nullopt;
    // Room within the quota comes from the tenant's own unpinned clean
    // pages (the walk passes over every other tenant's).
    auto skip = [&](const PageKey& k) ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return k.tenant != tenant || !clean(k) || index_.at(k).pinned();
    };
    while (BytesOfTenantLocked(tenant).ram + slot_bytes > quota) {
      std::optional<PageKey> victim = ram_policy_->Evict(skip);
      if (!victim) return std::nullopt;
      FreeRamLocked(*victim, index_.at(*victim));
      ++counters_.ram.evictions;
    }
  }
  auto skip = [&](const PageKey& k) { return !clean(k); };
  while (arena_->used_bytes() + slot_bytes > ram_high_bytes_ || !arena_->CanAllocate(bytes)) {
    std::optional<PageKey> victim = ram_policy_->Evict(skip);
    if (!victim) return std::nullopt;
    FreeRamLocked(*victim, index_.at(*victim));
    ++counters_.ram.evictions;
  }
  std::optional<RamArena::Slot> slot = arena_->Allocate(bytes);
  if (slot) ChargeRamLocked(tenant, RamArena::ClassBytes(slot->size_class));
  return slot;
}

void TieredStore::CompletePromotions(absl::Span<const PageKey> keys,
                                     absl::Span<const ReadItem> items,
                                     absl::Span<const GetResult> results,
                                     std::vector<Promotion> promotions) {
  for (const Promotion& p : promotions) {
    // The slot is ours alone until it is attached below.
    const std::string& data = results[p.item].data;
    std::memcpy(ram_base_ + p.slot.offset, data.data(), data.size());
  }
  absl::MutexLock lock(&mu_);
  for (const Promotion& p : promotions) {
    const PageKey& key = keys[p.item];
    auto it = index_.find(key);
    if (it == index_.end() || it->second.generation != items[p.item].generation ||
        it->second.in_ram) {
      arena_->Free(p.slot);
      CreditRamLocked(key.tenant, RamArena::ClassBytes(p.slot.size_class));
      continue;
    }
    PageEntry& entry = it->second;
    entry.promoting = false;
    entry.in_ram = true;
    entry.slot = p.slot;
    entry.disk_reads = 0;
    ram_policy_->OnInsert(key);
    ++counters_.promotions;
    counters_.ram.bytes_in += entry.meta.bytes;
  }
}

absl::StatusOr<uint64_t> TieredStore::DemoteAll(absl::Time deadline) {
  constexpr size_t kBatchPages = 64;
  std::vector<PageKey> candidates;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [key, entry] : index_) {
      if (entry.in_ram && !entry.on_disk) candidates.push_back(key);
    }
  }
  uint64_t written = 0;
  size_t next = 0;
  while (next < candidates.size() && absl::Now() < deadline) {
    std::vector<Demotion> batch;
    bool disk_full = false;
    {
      absl::MutexLock lock(&mu_);
      for (; next < candidates.size() && batch.size() < kBatchPages; ++next) {
        auto it = index_.find(candidates[next]);
        if (it == index_.end()) continue;
        PageEntry& entry = it->second;
        if (!entry.in_ram || entry.on_disk || entry.demoting) continue;
        if (!ReserveDiskLocked(it->first, entry.meta.bytes)) {
          disk_full = true;
          break;
        }
        batch.push_back(LeaseForDemotionLocked(it->first, entry));
      }
    }
    const size_t n = batch.size();
    if (n > 0) {
      const absl::Status s = CompleteDemotions(std::move(batch), /*keep_in_ram=*/true);
      if (!s.ok()) return absl::UnavailableError(absl::StrCat("demoting RAM pages: ", s.message()));
      written += n;
    }
    if (disk_full) break;
  }
  return written;
}

}  // namespace kvtier::store
