// Page checksums: XXH3-64 (seed 0) of the page bytes. Computed by writers,
// verified by the store on every read and on recovery.
#ifndef KVTIER_COMMON_CHECKSUM_H_
#define KVTIER_COMMON_CHECKSUM_H_

#include <cstddef>
#include <cstdint>

namespace kvtier {

uint64_t PageChecksum(const void* data, size_t bytes);

// Copies `bytes` from `src` to `dst` and returns PageChecksum of them, in
// one pass over `src`: each chunk is hashed while it is still in cache and
// then copied, instead of reading a large page from memory twice.
// REQUIRES: the ranges do not overlap.
uint64_t CopyWithChecksum(void* dst, const void* src, size_t bytes);

}  // namespace kvtier

#endif  // KVTIER_COMMON_CHECKSUM_H_
