// Page checksums: XXH3-64 (seed 0) of the page bytes. Computed by writers,
// verified by the store on every read and on recovery.
#ifndef KVTIER_COMMON_CHECKSUM_H_
#define KVTIER_COMMON_CHECKSUM_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace kvtier {

uint64_t PageChecksum(const void* data, size_t bytes);

// Which side of a copy CopyWithChecksum hashes: the one private to the
// caller, which nothing else can change under the copy. Copying out of
// shared memory (a mapped arena slot that may be reused meanwhile), hash
// the copy: a torn copy then fails its checksum instead of passing with the
// source's. Copying into shared memory, hash the source: the reader's
// check then catches bytes changed in the destination.
enum class HashSide { kSource, kCopy };

// Copies `bytes` from `src` to `dst` and returns PageChecksum of the bytes
// on side `side`, in one pass over `src`: each chunk is hashed while it is
// still in cache, instead of reading a large page from memory twice.
// REQUIRES: the ranges do not overlap.
uint64_t CopyWithChecksum(void* dst, const void* src, size_t bytes, HashSide side);

// Appends `bytes` from `src` to `out` and returns PageChecksum of the bytes
// appended, hashed from `out` as CopyWithChecksum's HashSide::kCopy does,
// without first filling `out` with zeros as a resize would.
uint64_t AppendWithChecksum(std::string* out, const void* src, size_t bytes);

}  // namespace kvtier

#endif  // KVTIER_COMMON_CHECKSUM_H_
