#include "common/secure_random.h"

#include <sys/random.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/log.h"

namespace kvtier {

void SecureRandomBytes(absl::Span<uint8_t> out) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = getrandom(out.data() + done, out.size() - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      KVTIER_LOG(ERROR) << "getrandom failed: " << std::strerror(errno);
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
}

uint64_t SecureRandom64() {
  uint8_t bytes[8];
  SecureRandomBytes(absl::MakeSpan(bytes));
  uint64_t value = 0;
  for (uint8_t b : bytes) value = (value << 8) | b;
  return value;
}

}  // namespace kvtier
