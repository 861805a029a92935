// Page checksums: XXH3-64 (seed 0) of the page bytes. Computed by writers,
// verified by the store on every read and on recovery.
#ifndef KVTIER_COMMON_CHECKSUM_H_
#define KVTIER_COMMON_CHECKSUM_H_

#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/types/span.h"

namespace kvtier {

uint64_t PageChecksum(const void* data, size_t bytes);

// Copies `bytes` from `src` to `dst` and returns PageChecksum of the source
// bytes, in one pass over `src`: each chunk is hashed while it is still in
// cache and then copied, instead of reading a large page from memory twice.
// For copies from the caller's own memory into memory others may change
// (a mapped arena slot, a staging region): the reader's check then catches
// bytes changed in the destination. REQUIRES: the ranges do not overlap.
uint64_t CopyWithChecksum(void* dst, const void* src, size_t bytes);

// Copies `bytes` from `src` to `dst` and returns PageChecksum of the bytes
// written to `dst`, each 128 KiB chunk hashed from `dst` right after it is
// copied (still in cache). For copies out of memory others may change (a
// client's segment) into memory only the caller writes: the checksum then
// describes exactly what was stored. REQUIRES: the ranges do not overlap.
uint64_t CopyAndHashCopy(void* dst, const void* src, size_t bytes);

// Appends `bytes` from `src` to `out` and returns PageChecksum of the bytes
// appended, each 128 KiB chunk hashed from `out` right after it is copied,
// without first filling `out` with zeros as a resize would. For copies out
// of memory others may change (a mapped arena slot reused meanwhile): the
// checksum is that of the bytes returned, so a torn copy fails its check
// instead of passing with the source's.
uint64_t AppendWithChecksum(std::string* out, const void* src, size_t bytes);

// Copies `bytes` from `src` into `pieces` in order and returns PageChecksum
// of the bytes written, hashed as CopyAndHashCopy hashes (from each piece,
// right after each chunk's copy). For a page that lands split across
// buffers (common/page_destination.h). REQUIRES: the pieces' sizes add up
// to `bytes`; no piece overlaps `src` or another piece.
uint64_t ScatterAndHashCopy(absl::Span<const absl::Span<uint8_t>> pieces, const void* src,
                            size_t bytes);

}  // namespace kvtier

#endif  // KVTIER_COMMON_CHECKSUM_H_
