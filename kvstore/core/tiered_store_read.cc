// TieredStore: the read path (batched gets, copying or in place; reads
// from RAM or disk outside the lock; lost pages; promotion after a read).
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kvstore/core/tiered_store.h"

namespace kvtier::store {
namespace {

absl::Span<const uint8_t> AsBytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

}  // namespace

absl::StatusOr<std::vector<GetResult>> TieredStore::BatchGet(absl::Span<const PageKey> keys) {
  return ReadBatch(keys, /*use=*/nullptr, InPlaceOptions());
}

absl::StatusOr<std::vector<GetResult>> TieredStore::BatchGetInPlace(
    absl::Span<const PageKey> keys, InPlaceUse use, const InPlaceOptions& options) {
  return ReadBatch(keys, &use, options);
}

absl::StatusOr<std::vector<GetResult>> TieredStore::ReadBatch(absl::Span<const PageKey> keys,
                                                              const InPlaceUse* use,
                                                              const InPlaceOptions& options) {
  if (keys.empty()) return absl::InvalidArgumentError("empty get batch");
  if (keys.size() > options_.max_batch_pages) {
    return absl::InvalidArgumentError(absl::StrCat("get batch of ", keys.size(),
                                                   " keys exceeds ", options_.max_batch_pages));
  }
  std::vector<ReadItem> items(keys.size());
  {
    absl::MutexLock lock(&mu_);
    SweepPinsLocked();
    for (size_t i = 0; i < keys.size(); ++i) {
      items[i] = StartReadLocked(keys[i], /*count_disk_read=*/!options.skip_disk);
    }
  }
  std::vector<GetResult> results(keys.size());
  std::vector<absl::Span<const uint8_t>> bytes(keys.size());
  bool any_lost = false;
  for (size_t i = 0; i < keys.size(); ++i) {
    bytes[i] = ReadPage(keys[i], items[i], /*copy_ram=*/use == nullptr, options, &results[i]);
    any_lost = any_lost || absl::IsDataLoss(results[i].status);
  }
  if (any_lost) {
    // Before `use`, so that it sees the outcome the caller gets.
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < keys.size(); ++i) ResolveLostLocked(keys[i], items[i], &results[i]);
  }
  // The leases taken above keep every RAM page in `bytes` unchanged until
  // they are returned below.
  const absl::Status used = use != nullptr ? (*use)(results, bytes) : absl::OkStatus();
  std::vector<Promotion> promotions;
  {
    absl::MutexLock lock(&mu_);
    for (size_t i = 0; i < keys.size(); ++i) {
      std::optional<RamArena::Slot> slot = FinishReadLocked(keys[i], items[i], results[i]);
      if (slot) promotions.push_back(Promotion{.item = i, .slot = *slot});
    }
  }
  if (!promotions.empty()) CompletePromotions(keys, items, results, std::move(promotions));
  RETURN_IF_ERROR(used);
  return results;
}

TieredStore::ReadItem TieredStore::StartReadLocked(const PageKey& key, bool count_disk_read) {
  ReadItem item;
  auto it = index_.find(key);
  if (it == index_.end()) {
    ++counters_.get_misses;
    return item;
  }
  PageEntry& entry = it->second;
  item.generation = entry.generation;
  item.meta = entry.meta;
  if (entry.in_ram) {
    item.kind = ReadItem::Kind::kRam;
    item.slot = entry.slot;
    ++entry.readers;
    ram_policy_->OnAccess(key);
  } else {
    item.kind = ReadItem::Kind::kDisk;
    item.counted = count_disk_read;
    if (!count_disk_read) return item;
    ++entry.disk_reads;
    item.promote = entry.disk_reads >= options_.promote_after_reads && !entry.promoting;
    if (item.promote) entry.promoting = true;
    disk_policy_->OnAccess(key);
  }
  return item;
}

void TieredStore::ResolveLostLocked(const PageKey& key, const ReadItem& item,
                                    GetResult* result) {
  if (!absl::IsDataLoss(result->status)) return;
  // A leased RAM slot of a dropped entry becomes a zombie, freed by the
  // last lease (FinishReadLocked).
  if (!DropLostLocked(key, item.generation)) {
    // Deleted or dropped while it was read: simply gone.
    result->status = absl::NotFoundError(absl::StrCat("page ", key.DebugString(), " not stored"));
    ++counters_.get_misses;
  }
}

std::optional<RamArena::Slot> TieredStore::FinishReadLocked(const PageKey& key,
                                                            const ReadItem& item,
                                                            const GetResult& result) {
  if (item.kind == ReadItem::Kind::kRam) ReleaseLeaseLocked(key, item.generation, item.slot);
  if (!result.status.ok()) {
    // A lost page was resolved before; any other failure promotes nothing.
    if (item.promote) {
      auto it = index_.find(key);
      if (it != index_.end() && it->second.generation == item.generation) {
        it->second.promoting = false;
      }
    }
    return std::nullopt;
  }
  if (!item.counted) return std::nullopt;  // skipped disk page: not a read
  TierStats& served = result.tier == Tier::kRam ? counters_.ram : counters_.disk;
  ++served.hits;
  served.bytes_out += item.meta.bytes;
  if (!item.promote) return std::nullopt;
  auto it = index_.find(key);
  if (it == index_.end() || it->second.generation != item.generation) return std::nullopt;
  std::optional<RamArena::Slot> slot;
  if (!it->second.in_ram) slot = PromotionSlotLocked(key, item.meta.bytes);
  if (!slot) it->second.promoting = false;
  return slot;
}

absl::Span<const uint8_t> TieredStore::ReadPage(const PageKey& key, const ReadItem& item,
                                                bool copy_ram, const InPlaceOptions& options,
                                                GetResult* result) {
  result->status = absl::NotFoundError(absl::StrCat("page ", key.DebugString(), " not stored"));
  if (item.kind == ReadItem::Kind::kMiss) return {};
  absl::Span<const uint8_t> bytes;
  if (item.kind == ReadItem::Kind::kRam) {
    // The lease keeps the slot allocated and unchanged while it is read.
    bytes = {ram_base_ + item.slot.offset, item.meta.bytes};
    if (copy_ram) {
      result->data.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      bytes = AsBytes(result->data);  // what is verified is what is returned
    }
    result->tier = Tier::kRam;
  } else if (options.skip_disk) {
    result->status = absl::OkStatus();
    result->layout = item.meta.layout;
    result->checksum = item.meta.checksum;
    result->tier = Tier::kDisk;
    return {};
  } else {
    absl::StatusOr<std::string> read = rocks_->Get(key);
    // A missing value under a live index entry is a lost page (the next
    // phase tells it from a page dropped meanwhile).
    if (!read.ok() && !absl::IsDataLoss(read.status()) && !absl::IsNotFound(read.status())) {
      result->status = read.status();
      return {};
    }
    if (read.ok()) result->data = *std::move(read);
    bytes = AsBytes(result->data);
    result->tier = Tier::kDisk;
  }
  const bool hash =
      item.kind == ReadItem::Kind::kDisk || copy_ram || options.ram_check == RamCheck::kStore;
  if (bytes.size() != item.meta.bytes ||
      (hash && PageChecksum(bytes.data(), bytes.size()) != item.meta.checksum)) {
    result->status = absl::DataLossError(
        absl::StrCat("page ", key.DebugString(), " failed its checksum and was dropped"));
    result->data.clear();
    result->tier = Tier::kNone;
    return {};
  }
  result->status = absl::OkStatus();
  result->layout = item.meta.layout;
  result->checksum = item.meta.checksum;
  return bytes;
}

Store::StoredBytes TieredStore::BytesOf(absl::Span<const PageKey> keys) const {
  StoredBytes out;
  absl::MutexLock lock(&mu_);
  for (const PageKey& key : keys) {
    auto it = index_.find(key);
    if (it == index_.end()) continue;
    (it->second.in_ram ? out.ram : out.disk_only) += it->second.meta.bytes;
  }
  return out;
}

}  // namespace kvtier::store
