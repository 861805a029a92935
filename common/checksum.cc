#include "common/checksum.h"

// For XXH3_state_t on the stack (the streaming API without an allocation).
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>
#if defined(__x86_64__)
// libxxhash's entry points that pick the widest vector unit the CPU has at
// run time (AVX2, AVX-512) and name them XXH3_64bits and
// XXH3_64bits_update here: the plain ones are built for baseline x86-64
// (SSE2), about 3x slower on page-sized input. Same hash values.
#include <xxh_x86dispatch.h>
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstring>

namespace kvtier {
namespace {

// Small enough to stay in a core's L2 between hashing and copying.
constexpr size_t kChunkBytes = size_t{128} << 10;

#if defined(__x86_64__)
// The dispatched XXH3 returns with the upper halves of the vector
// registers dirty (its AVX-512 path ends without vzeroupper). Legacy-SSE
// code that runs next on the same thread, such as OpenBLAS's SSE3 kernels,
// then pays a state-transition penalty on every instruction: the prefill
// that follows a prefix load, whose pages that thread had hashed, ran its
// attention 10x slower. Every function here clears them as it returns.
__attribute__((target("avx"))) void ZeroUpperAvx() { _mm256_zeroupper(); }
const bool kHasAvx = __builtin_cpu_supports("avx");
struct CleanVectorStateOnReturn {
  ~CleanVectorStateOnReturn() {
    if (kHasAvx) ZeroUpperAvx();
  }
};
#else
struct CleanVectorStateOnReturn {};
#endif

}  // namespace

uint64_t PageChecksum(const void* data, size_t bytes) {
  const CleanVectorStateOnReturn clean;
  return XXH3_64bits(data, bytes);
}

uint64_t CopyWithChecksum(void* dst, const void* src, size_t bytes) {
  const CleanVectorStateOnReturn clean;
  if (bytes <= kChunkBytes) {
    const uint64_t checksum = XXH3_64bits(src, bytes);
    // An empty copy may come with null pointers, which memcpy must not see.
    if (bytes != 0) std::memcpy(dst, src, bytes);
    return checksum;
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(kChunkBytes, bytes - done);
    XXH3_64bits_update(&state, in + done, n);
    std::memcpy(out + done, in + done, n);
    done += n;
  }
  return XXH3_64bits_digest(&state);
}

uint64_t CopyAndHashCopy(void* dst, const void* src, size_t bytes) {
  const CleanVectorStateOnReturn clean;
  const auto* in = static_cast<const uint8_t*>(src);
  auto* out = static_cast<uint8_t*>(dst);
  if (bytes <= kChunkBytes) {
    if (bytes != 0) std::memcpy(out, in, bytes);
    return XXH3_64bits(out, bytes);
  }
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  for (size_t done = 0; done < bytes;) {
    const size_t n = std::min(kChunkBytes, bytes - done);
    std::memcpy(out + done, in + done, n);
    XXH3_64bits_update(&state, out + done, n);
    done += n;
  }
  return XXH3_64bits_digest(&state);
}

uint64_t ScatterAndHashCopy(absl::Span<const absl::Span<uint8_t>> pieces, const void* src,
                            size_t bytes) {
  const CleanVectorStateOnReturn clean;
  if (pieces.size() == 1) return CopyAndHashCopy(pieces[0].data(), src, bytes);
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  const auto* in = static_cast<const uint8_t*>(src);
  size_t done = 0;
  for (const absl::Span<uint8_t>& piece : pieces) {
    for (size_t at = 0; at < piece.size() && done < bytes;) {
      const size_t n = std::min({kChunkBytes, piece.size() - at, bytes - done});
      std::memcpy(piece.data() + at, in + done, n);
      XXH3_64bits_update(&state, piece.data() + at, n);
      at += n;
      done += n;
    }
  }
  return XXH3_64bits_digest(&state);
}

uint64_t AppendWithChecksum(std::string* out, const void* src, size_t bytes) {
  const CleanVectorStateOnReturn clean;
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
