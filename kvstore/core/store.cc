// Store::Open, option and put-batch validation, BatchPut, the copying
// BatchGetInPlace and Reservation.
#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/status_macros.h"
#include "kvstore/eviction/eviction_policy.h"
#include "kvstore/core/ram_arena.h"
#include "kvstore/core/store.h"
#include "kvstore/core/tiered_store.h"

namespace kvtier::store {
namespace {

absl::Status ValidateTier(const TierOptions& tier, const char* name) {
  if (tier.capacity_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".capacity_bytes must be > 0"));
  }
  if (!(tier.low_watermark > 0.0) || !(tier.low_watermark <= tier.high_watermark) ||
      !(tier.high_watermark <= 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " watermarks must satisfy 0 < low_watermark <= high_watermark <= 1 (low ",
        tier.low_watermark, ", high ", tier.high_watermark, ")"));
  }
  if (!IsKnownEvictionPolicy(tier.policy)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ".policy \"", tier.policy, "\" is not lru or s3fifo"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status StoreOptions::Validate() const {
  if (data_dir.empty()) return absl::InvalidArgumentError("data_dir is empty");
  RETURN_IF_ERROR(ValidateTier(ram, "ram"));
  RETURN_IF_ERROR(ValidateTier(disk, "disk"));
  if (ram.capacity_bytes < RamArena::ClassBytes(0)) {
    return absl::InvalidArgumentError(absl::StrCat("ram.capacity_bytes must be at least ",
                                                   RamArena::ClassBytes(0), " (one 4 KiB slot)"));
  }
  if (ram.capacity_bytes > RamArena::kMaxCapacityBytes) {
    return absl::InvalidArgumentError(absl::StrCat("ram.capacity_bytes must be at most ",
                                                   RamArena::kMaxCapacityBytes));
  }
  if (max_batch_pages == 0) return absl::InvalidArgumentError("max_batch_pages must be > 0");
  if (max_lookup_pages == 0) return absl::InvalidArgumentError("max_lookup_pages must be > 0");
  if (max_lookup_entries == 0) {
    return absl::InvalidArgumentError("max_lookup_entries must be > 0");
  }
  if (promote_after_reads == 0) {
    return absl::InvalidArgumentError("promote_after_reads must be > 0");
  }
  if (max_pin_ttl_ms == 0) return absl::InvalidArgumentError("max_pin_ttl_ms must be > 0");
  if (max_pins == 0) return absl::InvalidArgumentError("max_pins must be > 0");
  return absl::OkStatus();
}

TenantQuotas StoreOptions::DefaultTenantQuotas() const {
  TenantQuotas quotas;
  quotas.max_ram_bytes = tenant_max_ram_bytes;
  quotas.max_disk_bytes = tenant_max_disk_bytes;
  quotas.max_pins = tenant_max_pins;
  quotas.max_pinned_bytes = tenant_max_pinned_bytes;
  return quotas;
}

absl::Status ValidatePutSpecs(absl::Span<const PutSpec> specs, uint32_t max_batch_pages) {
  if (specs.empty()) return absl::InvalidArgumentError("empty put batch");
  if (specs.size() > max_batch_pages) {
    return absl::InvalidArgumentError(absl::StrCat("put batch of ", specs.size(),
                                                   " pages exceeds ", max_batch_pages));
  }
  absl::flat_hash_set<PageKey> seen;
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::Status layout = specs[i].layout.Validate();
    if (!layout.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("page ", i, ": ", layout.message()));
    }
    if (!seen.insert(specs[i].key).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("page ", i, ": key ", specs[i].key.DebugString(), " twice in one batch"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Store>> Store::Open(const StoreOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  ASSIGN_OR_RETURN(std::unique_ptr<TieredStore> store, TieredStore::Open(options));
  return std::unique_ptr<Store>(std::move(store));
}

absl::StatusOr<std::vector<PutResult>> Store::BatchPut(
    absl::Span<const PutSpec> specs, absl::Span<const absl::Span<const uint8_t>> data) {
  if (specs.size() != data.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(specs.size(), " page specs but ", data.size(), " byte buffers"));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::Status layout = specs[i].layout.Validate();
    if (!layout.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("page ", i, ": ", layout.message()));
    }
    if (data[i].size() != specs[i].layout.PageBytes()) {
      return absl::InvalidArgumentError(absl::StrCat("page ", i, ": ", data[i].size(),
                                                     " bytes, its layout needs ",
                                                     specs[i].layout.PageBytes()));
    }
  }
  // A page found stored at Reserve and removed before Commit aborts the
  // commit; the bytes are here, so the next round writes it.
  constexpr int kMaxRounds = 4;
  absl::StatusOr<std::vector<PutResult>> committed;
  for (int round = 0; round < kMaxRounds; ++round) {
    ASSIGN_OR_RETURN(Reservation reservation, Reserve(specs));
    // Each page is hashed on its copy in the store's memory, in one pass
    // with the copy: the source may be memory a client can still change
    // (a local lane's segment), and what is checked is what is stored.
    for (size_t i = 0; i < reservation.size(); ++i) {
      absl::Span<uint8_t> buffer = reservation.buffer(i);
      if (buffer.empty()) continue;
      if (CopyAndHashCopy(buffer.data(), data[i].data(), buffer.size()) != specs[i].checksum) {
        // `reservation` aborts itself when it goes out of scope.
        return absl::DataLossError(absl::StrCat("page ", i, " (", specs[i].key.DebugString(),
                                                "): bytes do not match the checksum"));
      }
    }
    reservation.verified_ = true;
    committed = Commit(std::move(reservation));
    if (!absl::IsAborted(committed.status())) break;
  }
  return committed;
}

absl::StatusOr<std::vector<PutResult>> Store::BatchPutFilled(absl::Span<const PutSpec> specs,
                                                            FillFn fill) {
  // A commit ABORTED because a page stored at Reserve was removed since is
  // tried again from Reserve: `fill` can write the bytes again.
  constexpr int kMaxRounds = 4;
  absl::StatusOr<std::vector<PutResult>> committed;
  for (int round = 0; round < kMaxRounds; ++round) {
    ASSIGN_OR_RETURN(Reservation reservation, Reserve(specs));
    // On an error `reservation` aborts itself when it goes out of scope.
    RETURN_IF_ERROR(fill(reservation));
    committed = Commit(std::move(reservation));
    if (!absl::IsAborted(committed.status())) break;
  }
  return committed;
}

absl::StatusOr<std::vector<GetResult>> Store::BatchGetInPlace(absl::Span<const PageKey> keys,
                                                              InPlaceUse use,
                                                              const InPlaceOptions& /*options*/) {
  // The copies BatchGet verified: no check is left to choose.
  ASSIGN_OR_RETURN(std::vector<GetResult> results, BatchGet(keys));
  std::vector<absl::Span<const uint8_t>> bytes(results.size());
  for (size_t i = 0; i < results.size(); ++i) {
    const std::string& data = results[i].data;
    if (results[i].status.ok()) {
      bytes[i] = {reinterpret_cast<const uint8_t*>(data.data()), data.size()};
    }
  }
  RETURN_IF_ERROR(use(results, bytes));
  return results;
}

Reservation Store::MakeReservation(Store* store, uint64_t id, std::vector<PutSpec> specs,
                                   std::vector<absl::Span<uint8_t>> buffers) {
  Reservation r;
  r.store_ = store;
  r.id_ = id;
  r.specs_ = std::move(specs);
  r.buffers_ = std::move(buffers);
  return r;
}

Reservation::Reservation(Reservation&& other) noexcept
    : store_(other.store_),
      id_(other.id_),
      specs_(std::move(other.specs_)),
      buffers_(std::move(other.buffers_)),
      verified_(other.verified_) {
  other.store_ = nullptr;
  other.id_ = 0;
}

Reservation& Reservation::operator=(Reservation&& other) noexcept {
  if (this == &other) return *this;
  if (store_ != nullptr) store_->AbortById(id_);
  store_ = other.store_;
  id_ = other.id_;
  specs_ = std::move(other.specs_);
  buffers_ = std::move(other.buffers_);
  verified_ = other.verified_;
  other.store_ = nullptr;
  other.id_ = 0;
  return *this;
}

Reservation::~Reservation() {
  if (store_ != nullptr) store_->AbortById(id_);
}

}  // namespace kvtier::store
