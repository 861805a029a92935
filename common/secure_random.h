// Unpredictable bytes from the kernel's CSPRNG (getrandom(2)), for ids that
// name something a client may act on (pins, data-plane sessions): knowing
// some ids must not help guess another.
#ifndef KVTIER_COMMON_SECURE_RANDOM_H_
#define KVTIER_COMMON_SECURE_RANDOM_H_

#include <cstdint>

#include "absl/types/span.h"

namespace kvtier {

// Fills `out`. getrandom blocks only until the kernel's pool is first
// seeded at boot; any other failure aborts the process (no id may ever be
// predictable).
void SecureRandomBytes(absl::Span<uint8_t> out);
uint64_t SecureRandom64();

}  // namespace kvtier

#endif  // KVTIER_COMMON_SECURE_RANDOM_H_
