#include "common/checksum.h"

// For XXH3_state_t on the stack (the streaming API without an allocation).
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include <algorithm>
#include <cstring>

namespace kvtier {
namespace {

// Small enough to stay in a core's L2 between hashing and copying.
constexpr size_t kChunkBytes = size_t{128} << 10;

}  // namespace

uint64_t PageChecksum(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

uint64_t CopyWithChecksum(void* dst, const void* src, size_t bytes, HashSide side) {
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  const uint8_t* hashed = side == HashSide::kSource ? in : out;
  if (bytes <= kChunkBytes) {
    // The source is read once either way: hashed and then copied from
    // cache, or copied and then hashed from the copy.
    if (side == HashSide::kSource) {
      const uint64_t checksum = XXH3_64bits(in, bytes);
      std::memcpy(out, in, bytes);
      return checksum;
    }
    std::memcpy(out, in, bytes);
    return XXH3_64bits(out, bytes);
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(kChunkBytes, bytes - done);
    if (side == HashSide::kSource) {
      XXH3_64bits_update(&state, hashed + done, n);
      std::memcpy(out + done, in + done, n);
    } else {
      std::memcpy(out + done, in + done, n);
      XXH3_64bits_update(&state, hashed + done, n);
    }
    done += n;
  }
  return XXH3_64bits_digest(&state);
}

uint64_t AppendWithChecksum(std::string* out, const void* src, size_t bytes) {
  const auto* in = static_cast<const char*>(src);
  out->reserve(out->size() + bytes);
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(kChunkBytes, bytes - done);
    out->append(in + done, n);
    XXH3_64bits_update(&state, out->data() + out->size() - n, n);
    done += n;
  }
  return XXH3_64bits_digest(&state);
}

}  // namespace kvtier
