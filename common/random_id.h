// RandomId: a 128-bit id that a client holds for something the server
// keeps for it (a pin, a data-plane session). 128 bits from the kernel's
// CSPRNG, so that no id can be guessed, from others or by trying: an id is
// a capability wherever the caller is not otherwise known (a UCX peer).
// `Tag` gives each kind of id its own type and the name errors use
// (`static constexpr absl::string_view kField`).
#ifndef KVTIER_COMMON_RANDOM_ID_H_
#define KVTIER_COMMON_RANDOM_ID_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier {

namespace random_id_internal {
inline constexpr size_t kIdBytes = 16;
std::string ToBytes(uint64_t hi, uint64_t lo);
// INVALID_ARGUMENT naming `field` unless `bytes` is kIdBytes long (or empty
// when `empty_ok`, which yields zero).
absl::Status FromBytes(absl::string_view bytes, absl::string_view field, bool empty_ok,
                       uint64_t* hi, uint64_t* lo);
std::string ShortHex(uint64_t hi);
void Random(uint64_t* hi, uint64_t* lo);
}  // namespace random_id_internal

template <typename Tag>
struct RandomId {
  uint64_t hi = 0;
  uint64_t lo = 0;

  static constexpr size_t kBytes = random_id_internal::kIdBytes;

  // A fresh id; never zero.
  static RandomId Random() {
    RandomId id;
    random_id_internal::Random(&id.hi, &id.lo);
    return id;
  }
  // The 16 bytes a client sees: hi then lo, each big-endian.
  std::string Bytes() const { return random_id_internal::ToBytes(hi, lo); }
  // INVALID_ARGUMENT unless `bytes` is 16 bytes long.
  static absl::StatusOr<RandomId> FromBytes(absl::string_view bytes) {
    return Parse(bytes, /*empty_ok=*/false);
  }
  // As FromBytes, and empty bytes are the zero id (a field left unset).
  static absl::StatusOr<RandomId> FromBytesOrEmpty(absl::string_view bytes) {
    return Parse(bytes, /*empty_ok=*/true);
  }
  bool IsZero() const { return hi == 0 && lo == 0; }
  // Its first 32 bits in hex, for logs and errors: enough to tell ids
  // apart, too few to act with whoever reads them.
  std::string DebugString() const { return random_id_internal::ShortHex(hi); }

  friend bool operator==(const RandomId&, const RandomId&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const RandomId& id) {
    return H::combine(std::move(h), id.hi, id.lo);
  }

 private:
  static absl::StatusOr<RandomId> Parse(absl::string_view bytes, bool empty_ok) {
    RandomId id;
    if (absl::Status s =
            random_id_internal::FromBytes(bytes, Tag::kField, empty_ok, &id.hi, &id.lo);
        !s.ok()) {
      return s;
    }
    return id;
  }
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_RANDOM_ID_H_
