#include "common/checksum.h"

#include <xxhash.h>

namespace kvtier {

uint64_t PageChecksum(const void* data, size_t bytes) { return XXH3_64bits(data, bytes); }

}  // namespace kvtier
