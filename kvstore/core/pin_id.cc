#include "kvstore/core/pin_id.h"

#include "absl/strings/str_format.h"
#include "common/secure_random.h"

namespace kvtier::store {

PinId PinId::Random() {
  PinId id;
  do {
    id.hi = SecureRandom64();
    id.lo = SecureRandom64();
  } while (id.IsZero());
  return id;
}

std::string PinId::Bytes() const {
  std::string out(kBytes, '\0');
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>(hi >> (8 * (7 - i)));
    out[8 + i] = static_cast<char>(lo >> (8 * (7 - i)));
  }
  return out;
}

absl::StatusOr<PinId> PinId::FromBytes(std::string_view bytes) {
  PinId id;
  if (bytes.empty()) return id;
  if (bytes.size() != kBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pin_id must be empty or %d bytes, got %d", kBytes, bytes.size()));
  }
  for (int i = 0; i < 8; ++i) {
    id.hi = (id.hi << 8) | static_cast<uint8_t>(bytes[i]);
    id.lo = (id.lo << 8) | static_cast<uint8_t>(bytes[8 + i]);
  }
  return id;
}

std::string PinId::DebugString() const { return absl::StrFormat("%016x%016x", hi, lo); }

}  // namespace kvtier::store
