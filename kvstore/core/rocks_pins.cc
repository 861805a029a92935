// RocksTier: pins in the "pins" family (format in rocks_tier.h), so that a
// pinned page stays pinned across a restart, graceful or not.
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/endian.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kvstore/core/rocks_tier.h"
#include "rocksdb/db.h"
#include "rocksdb/write_batch.h"

namespace kvtier::store {
namespace {

constexpr size_t kIdBytes = 8;
constexpr size_t kUnownedValueBytes = 1 + 8;
constexpr size_t kOwnedValueBytes = 1 + 8 + 8 + PinId::kBytes;
// Pin ids count up from 1; one past this is damage, not a pin, and would
// run the store's id counter out.
constexpr uint64_t kMaxPinId = uint64_t{1} << 62;

std::string PinIdKey(uint64_t pin_id) {
  std::string key(kIdBytes, '\0');
  for (size_t i = 0; i < kIdBytes; ++i) {
    key[i] = static_cast<char>(pin_id >> (8 * (kIdBytes - 1 - i)));
  }
  return key;
}

uint64_t PinIdOf(std::string_view key) {
  uint64_t id = 0;
  for (size_t i = 0; i < kIdBytes; ++i) id = (id << 8) | static_cast<uint8_t>(key[i]);
  return id;
}

rocksdb::Slice AsSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

}  // namespace

absl::Status RocksTier::SavePin(uint64_t pin_id, const StoredPin& pin,
                                absl::Span<const PageKey> added) {
  rocksdb::WriteBatch batch;
  const std::string id_key = PinIdKey(pin_id);
  std::string expiry(kOwnedValueBytes, '\0');
  expiry[0] = static_cast<char>(kFormatVersion);
  auto* p = reinterpret_cast<uint8_t*>(expiry.data());
  StoreLe64(p + 1, static_cast<uint64_t>(pin.expiry_unix_ms));
  StoreLe64(p + 9, pin.tenant);
  expiry.replace(17, PinId::kBytes, pin.public_id.Bytes());
  RETURN_IF_ERROR(
      FromRocksStatus(batch.Put(handles_[kPinsIndex], AsSlice(id_key), AsSlice(expiry))));
  const std::string version(1, static_cast<char>(kFormatVersion));
  for (const PageKey& key : added) {
    RETURN_IF_ERROR(FromRocksStatus(batch.Put(handles_[kPinsIndex],
                                              AsSlice(id_key + key.Encode()), AsSlice(version))));
  }
  return FromRocksStatus(db_->Write(rocksdb::WriteOptions(), &batch));
}

absl::Status RocksTier::DeletePin(uint64_t pin_id) {
  // Every record of the pin sorts in [id, id || 0xff x (key bytes + 1)).
  const std::string begin = PinIdKey(pin_id);
  const std::string end = begin + std::string(PageKey::kTenantedBytes + 1, '\xff');
  return FromRocksStatus(db_->DeleteRange(rocksdb::WriteOptions(), handles_[kPinsIndex],
                                          AsSlice(begin), AsSlice(end)));
}

absl::Status RocksTier::ReadPins(std::vector<StoredPin>* pins, uint64_t* malformed) {
  pins->clear();
  std::vector<std::string> bad_keys;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), handles_[kPinsIndex]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key = it->key().ToStringView();
      const std::string_view value = it->value().ToStringView();
      const bool versioned = !value.empty() && static_cast<uint8_t>(value[0]) == kFormatVersion;
      const bool owned = value.size() == kOwnedValueBytes;
      if (key.size() == kIdBytes && versioned && (owned || value.size() == kUnownedValueBytes) &&
          PinIdOf(key) != 0 && PinIdOf(key) <= kMaxPinId) {
        const auto* p = reinterpret_cast<const uint8_t*>(value.data());
        StoredPin pin;
        pin.id = PinIdOf(key);
        pin.expiry_unix_ms = static_cast<int64_t>(LoadLe64(p + 1));
        if (owned) {
          pin.tenant = LoadLe64(p + 9);
          pin.public_id =
              *PinId::FromBytes(absl::string_view(value.data() + 17, value.size() - 17));
        }
        pins->push_back(std::move(pin));
        continue;
      }
      if (key.size() > kIdBytes && versioned && value.size() == 1 && !pins->empty() &&
          pins->back().id == PinIdOf(key)) {
        absl::StatusOr<PageKey> page = PageKey::Decode(key.substr(kIdBytes));
        if (page.ok()) {
          pins->back().keys.push_back(*page);
          continue;
        }
      }
      bad_keys.emplace_back(key);
    }
    RETURN_IF_ERROR(FromRocksStatus(it->status()));
  }
  if (malformed != nullptr) *malformed = bad_keys.size();
  if (bad_keys.empty()) return absl::OkStatus();
  KVTIER_LOG(WARNING) << "deleting " << bad_keys.size() << " malformed pin records";
  rocksdb::WriteBatch batch;
  for (const std::string& key : bad_keys) {
    RETURN_IF_ERROR(FromRocksStatus(batch.Delete(handles_[kPinsIndex], key)));
  }
  return FromRocksStatus(db_->Write(rocksdb::WriteOptions(), &batch));
}

}  // namespace kvtier::store
