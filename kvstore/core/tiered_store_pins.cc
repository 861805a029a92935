// TieredStore: pins (a TTL and a set of pages that are never dropped while
// it lives; a pinned page is written through to disk before the pin is
// acknowledged).
#include <algorithm>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kvstore/core/tiered_store.h"

namespace kvtier::store {

absl::StatusOr<PinId> TieredStore::Pin(uint64_t tenant, absl::Span<const PageKey> keys,
                                       uint64_t ttl_ms, const PinId& public_id) {
  if (ttl_ms == 0 || ttl_ms > options_.max_pin_ttl_ms) {
    return absl::InvalidArgumentError(absl::StrCat("pin ttl_ms ", ttl_ms, " not in [1, ",
                                                   options_.max_pin_ttl_ms, "]"));
  }
  if (keys.size() > options_.max_batch_pages) {
    return absl::InvalidArgumentError(absl::StrCat("pin of ", keys.size(), " keys exceeds ",
                                                   options_.max_batch_pages));
  }
  for (const PageKey& key : keys) {
    if (key.tenant != tenant) {
      return absl::InvalidArgumentError(absl::StrCat(
          "page ", key.DebugString(), " is not the pinning tenant's; a pin holds its own "
          "tenant's pages only"));
    }
  }
  bool created = false;
  uint64_t pin_id = 0;
  PinId result;
  std::vector<PageKey> added;
  std::vector<Demotion> copies;
  {
    absl::MutexLock lock(&mu_);
    SweepPinsLocked();
    if (!public_id.IsZero()) {
      pin_id = pins_.Find(tenant, public_id);
      if (pin_id == 0) return UnknownPinError(public_id);
    }
    for (const PageKey& key : keys) {
      if (!index_.contains(key)) {
        return absl::NotFoundError(
            absl::StrCat("page ", key.DebugString(), " is not stored; nothing pinned"));
      }
    }
    RETURN_IF_ERROR(CheckPinQuotasLocked(tenant, keys, /*new_pin=*/pin_id == 0));
    const int64_t expiry_ms = clock_->NowMillis() + static_cast<int64_t>(ttl_ms);
    if (pin_id == 0) {
      if (pins_.size() >= options_.max_pins) {
        return absl::ResourceExhaustedError(
            absl::StrCat(pins_.size(), " live pins, the most max_pins allows"));
      }
      pin_id = pins_.Create(expiry_ms, tenant);
      created = true;
    } else {
      pins_.SetExpiry(pin_id, expiry_ms);
    }
    result = pins_.public_id(pin_id);
    for (const PageKey& key : keys) {
      if (pins_.AddKey(pin_id, key)) {
        LinkPinLocked(key, index_.at(key), pin_id);
        added.push_back(key);
      }
    }
    // Write-through: a pinned page whose only copy is in RAM goes to disk
    // before the pin is acknowledged, so that it survives a restart or a
    // killed server. Being pinned, it cannot be dropped to make that room.
    uint64_t no_room = 0;
    for (const PageKey& key : added) {
      PageEntry& entry = index_.at(key);
      if (!entry.in_ram || entry.on_disk || entry.demoting) continue;
      if (!ReserveDiskLocked(key, entry.meta.bytes)) {
        ++no_room;
        continue;
      }
      copies.push_back(LeaseForDemotionLocked(key, entry));
    }
    if (no_room > 0) {
      for (const Demotion& d : copies) CancelDemotionLocked(d);
      UndoPinLocked(pin_id, created, added);
      return absl::ResourceExhaustedError(
          absl::StrCat("the disk tier has no room for ", no_room,
                       " pinned pages held only in RAM (it is full of pinned pages, the "
                       "tenant's disk quota is full of its pinned pages, or the directory is "
                       "at its bound until deleted pages' bytes are freed); nothing pinned"));
    }
  }
  const absl::Status written = CompleteDemotions(std::move(copies), /*keep_in_ram=*/true);
  absl::MutexLock lock(&mu_);
  // Pages an eviction was demoting when they were pinned are durable only
  // once that write ends.
  auto settled = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
    for (const PageKey& key : added) {
      auto it = index_.find(key);
      if (it != index_.end() && it->second.demoting) return false;
    }
    return true;
  };
  mu_.Await(absl::Condition(&settled));
  uint64_t ram_only = 0;
  for (const PageKey& key : added) {
    auto it = index_.find(key);
    if (it != index_.end() && it->second.in_ram && !it->second.on_disk) ++ram_only;
  }
  if (ram_only > 0) {
    if (pins_.Contains(pin_id)) UndoPinLocked(pin_id, created, added);
    return absl::UnavailableError(
        absl::StrCat(ram_only, " pinned pages could not be written to disk (",
                     written.ok() ? "a demotion failed" : written.ToString(),
                     "); nothing pinned"));
  }
  // The pin itself is durable too (under mu_, so that records of one pin
  // are written in the order its calls were made).
  if (pins_.Contains(pin_id)) {
    StoredPin record;
    record.expiry_unix_ms = UnixMillisOf(pins_.expiry_ms(pin_id));
    record.tenant = tenant;
    record.public_id = pins_.public_id(pin_id);
    const absl::Status saved = rocks_->SavePin(pin_id, record, added);
    if (!saved.ok()) {
      UndoPinLocked(pin_id, created, added);
      return absl::UnavailableError(
          absl::StrCat("the pin could not be recorded on disk (", saved.ToString(),
                       "); nothing pinned"));
    }
  }
  // (A pin that expired while its pages were written ended as a pin does.)
  return result;
}

absl::Status TieredStore::UnknownPinError(const PinId& public_id) {
  return absl::NotFoundError(
      absl::StrCat("pin ", public_id.DebugString(), " is unknown or expired"));
}

int64_t TieredStore::UnixMillisOf(int64_t expiry_ms) const {
  return absl::ToUnixMillis(absl::Now()) + (expiry_ms - clock_->NowMillis());
}

void TieredStore::RestorePinsLocked(absl::Span<const StoredPin> stored) {
  const int64_t now_unix_ms = absl::ToUnixMillis(absl::Now());
  uint64_t restored = 0;
  uint64_t expired = 0;
  uint64_t pinned_pages = 0;
  for (const StoredPin& pin : stored) {
    pins_.SkipIdsThrough(pin.id);
    const int64_t left_ms = pin.expiry_unix_ms - now_unix_ms;
    if (left_ms <= 0) {
      ++expired;
      if (absl::Status s = rocks_->DeletePin(pin.id); !s.ok()) {
        KVTIER_LOG(ERROR) << "cannot delete expired pin " << pin.id << ": " << s;
      }
      continue;
    }
    // A record from a clock far ahead, or damaged, lives no longer than
    // any pin may.
    const int64_t ttl_ms = std::min<int64_t>(left_ms, options_.max_pin_ttl_ms);
    PinId public_id = pin.public_id;
    // A pin recorded before public ids (or a damaged id) gets a fresh one:
    // nobody can name it, and it protects its pages until its TTL ends.
    while (public_id.IsZero() || pins_.Find(pin.tenant, public_id) != 0) {
      public_id = PinId::Random();
    }
    pins_.Restore(pin.id, clock_->NowMillis() + ttl_ms, pin.tenant, public_id);
    ++restored;
    for (const PageKey& key : pin.keys) {
      // A page deleted (forced) while pinned is gone; its record stays
      // until the pin ends.
      auto it = index_.find(key);
      if (it == index_.end() || !pins_.AddKey(pin.id, key)) continue;
      LinkPinLocked(key, it->second, pin.id);
      ++pinned_pages;
    }
  }
  if (!stored.empty()) {
    KVTIER_LOG(INFO) << "restored " << restored << " pins over " << pinned_pages
                     << " pages; " << expired << " had expired";
  }
}

void TieredStore::UndoPinLocked(uint64_t pin_id, bool created, absl::Span<const PageKey> added) {
  if (created) {
    ReleasePinLocked(pin_id);
    return;
  }
  for (const PageKey& key : added) {
    pins_.RemoveKey(pin_id, key);
    UnlinkPinLocked(key, pin_id);
  }
}

absl::Status TieredStore::Unpin(uint64_t tenant, const PinId& public_id) {
  absl::MutexLock lock(&mu_);
  SweepPinsLocked();
  const uint64_t pin_id = public_id.IsZero() ? 0 : pins_.Find(tenant, public_id);
  if (pin_id == 0) return UnknownPinError(public_id);
  ReleasePinLocked(pin_id);
  return absl::OkStatus();
}

std::vector<HeldPage> TieredStore::HeldPages(bool pinned_only) const {
  absl::MutexLock lock(&mu_);
  const int64_t now_ms = clock_->NowMillis();
  // Expiries on the store's clock, reported as Unix time.
  const int64_t unix_now_ms = absl::ToUnixMillis(absl::Now());
  std::vector<HeldPage> held;
  for (const auto& [key, entry] : index_) {
    int64_t expiry_ms = 0;
    for (uint64_t pin_id : entry.pin_ids) {
      if (pins_.Contains(pin_id)) expiry_ms = std::max(expiry_ms, pins_.expiry_ms(pin_id));
    }
    // A pin past its expiry but not yet swept holds nothing.
    const int64_t unix_expiry_ms = expiry_ms > now_ms ? unix_now_ms + (expiry_ms - now_ms) : 0;
    if (unix_expiry_ms > 0 || !pinned_only) {
      held.push_back(HeldPage{.key = key, .pin_expiry_ms = unix_expiry_ms});
    }
  }
  return held;
}

void TieredStore::SweepPinsLocked() {
  const int64_t now_ms = clock_->NowMillis();
  while (uint64_t pin_id = pins_.FirstExpired(now_ms)) ReleasePinLocked(pin_id);
}

void TieredStore::ReleasePinLocked(uint64_t pin_id) {
  for (const PageKey& key : pins_.Release(pin_id)) UnlinkPinLocked(key, pin_id);
  // Should this fail, the pin comes back at a restart until its TTL ends.
  if (absl::Status s = rocks_->DeletePin(pin_id); !s.ok()) {
    KVTIER_LOG(ERROR) << "cannot delete the record of pin " << pin_id << ": " << s;
  }
}

void TieredStore::UnlinkPinLocked(const PageKey& key, uint64_t pin_id) {
  auto it = index_.find(key);
  if (it == index_.end()) return;
  auto& ids = it->second.pin_ids;
  const bool was_pinned = !ids.empty();
  ids.erase(std::remove(ids.begin(), ids.end(), pin_id), ids.end());
  if (was_pinned && ids.empty()) UncountPinnedLocked(key, it->second);
}

void TieredStore::LinkPinLocked(const PageKey& key, PageEntry& entry, uint64_t pin_id) {
  if (entry.pin_ids.empty()) pinned_bytes_[key.tenant] += entry.meta.bytes;
  entry.pin_ids.push_back(pin_id);
}

void TieredStore::UncountPinnedLocked(const PageKey& key, const PageEntry& entry) {
  auto it = pinned_bytes_.find(key.tenant);
  if (it == pinned_bytes_.end()) return;
  it->second -= std::min(it->second, entry.meta.bytes);
  if (it->second == 0) pinned_bytes_.erase(it);
}

absl::Status TieredStore::CheckPinQuotasLocked(uint64_t tenant, absl::Span<const PageKey> keys,
                                               bool new_pin) {
  const TenantQuotas quotas = QuotasOfLocked(tenant);
  if (new_pin && quotas.max_pins != 0 && pins_.CountOf(tenant) >= quotas.max_pins) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the tenant has ", pins_.CountOf(tenant), " live pins, its quota (tenant_max_pins); "
        "nothing pinned"));
  }
  if (quotas.max_pinned_bytes == 0) return absl::OkStatus();
  uint64_t adding = 0;
  absl::flat_hash_set<PageKey> counted;
  for (const PageKey& key : keys) {
    const PageEntry& entry = index_.at(key);
    if (!entry.pinned() && counted.insert(key).second) adding += entry.meta.bytes;
  }
  auto it = pinned_bytes_.find(tenant);
  const uint64_t pinned = it == pinned_bytes_.end() ? 0 : it->second;
  if (pinned + adding > quotas.max_pinned_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "pinning ", adding, " more bytes would take the tenant's pinned pages to ",
        pinned + adding, " bytes, past its quota of ", quotas.max_pinned_bytes,
        " (tenant_max_pinned_bytes); nothing pinned"));
  }
  return absl::OkStatus();
}

}  // namespace kvtier::store
