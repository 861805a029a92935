// PinId: the id a client holds for a pin. 128 random bits, so that ids
// cannot be guessed from others, and meaningful only to the tenant that
// created the pin (the store looks pins up by tenant and id together).
#ifndef KVTIER_KVSTORE_CORE_PIN_ID_H_
#define KVTIER_KVSTORE_CORE_PIN_ID_H_

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvtier::store {

struct PinId {
  uint64_t hi = 0;
  uint64_t lo = 0;

  static constexpr size_t kBytes = 16;
  // A fresh id from the kernel's CSPRNG; never zero.
  static PinId Random();
  // The 16 bytes a client sees: hi then lo, each big-endian.
  std::string Bytes() const;
  // INVALID_ARGUMENT unless `bytes` is empty (the zero id: "no pin") or 16
  // bytes long.
  static absl::StatusOr<PinId> FromBytes(std::string_view bytes);
  bool IsZero() const { return hi == 0 && lo == 0; }
  // Hex, for logs.
  std::string DebugString() const;

  friend bool operator==(const PinId&, const PinId&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const PinId& id) {
    return H::combine(std::move(h), id.hi, id.lo);
  }
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_PIN_ID_H_
