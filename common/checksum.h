// Page checksums: XXH3-64 (seed 0) of the page bytes. Computed by writers,
// verified by the store on every read and on recovery.
#ifndef KVTIER_COMMON_CHECKSUM_H_
#define KVTIER_COMMON_CHECKSUM_H_

#include <cstddef>
#include <cstdint>

namespace kvtier {

uint64_t PageChecksum(const void* data, size_t bytes);

}  // namespace kvtier

#endif  // KVTIER_COMMON_CHECKSUM_H_
