#include "common/random_id.h"

#include "absl/strings/str_format.h"
#include "common/secure_random.h"

namespace kvtier::random_id_internal {

std::string ToBytes(uint64_t hi, uint64_t lo) {
  std::string out(kIdBytes, '\0');
  for (int i = 0; i < 8; ++i) {
    out[i] = static_cast<char>(hi >> (8 * (7 - i)));
    out[8 + i] = static_cast<char>(lo >> (8 * (7 - i)));
  }
  return out;
}

absl::Status FromBytes(absl::string_view bytes, absl::string_view field, bool empty_ok,
                       uint64_t* hi, uint64_t* lo) {
  *hi = 0;
  *lo = 0;
  if (bytes.empty() && empty_ok) return absl::OkStatus();
  if (bytes.size() != kIdBytes) {
    return absl::InvalidArgumentError(absl::StrFormat("%s must be %s%d bytes, got %d", field,
                                                      empty_ok ? "empty or " : "", kIdBytes,
                                                      bytes.size()));
  }
  for (int i = 0; i < 8; ++i) {
    *hi = (*hi << 8) | static_cast<uint8_t>(bytes[i]);
    *lo = (*lo << 8) | static_cast<uint8_t>(bytes[8 + i]);
  }
  return absl::OkStatus();
}

std::string ShortHex(uint64_t hi) { return absl::StrFormat("%08x", hi >> 32); }

void Random(uint64_t* hi, uint64_t* lo) {
  do {
    *hi = SecureRandom64();
    *lo = SecureRandom64();
  } while (*hi == 0 && *lo == 0);
}

}  // namespace kvtier::random_id_internal
