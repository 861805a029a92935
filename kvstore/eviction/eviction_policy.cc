#include "kvstore/eviction/eviction_policy.h"

#include "absl/strings/str_cat.h"
#include "kvstore/eviction/lru_policy.h"
#include "kvstore/eviction/s3fifo_policy.h"

namespace kvtier::store {

bool IsKnownEvictionPolicy(std::string_view name) { return name == "lru" || name == "s3fifo"; }

absl::StatusOr<std::unique_ptr<EvictionPolicy>> MakeEvictionPolicy(std::string_view name) {
  if (name == "lru") return std::make_unique<LruPolicy>();
  if (name == "s3fifo") return std::make_unique<S3FifoPolicy>();
  return absl::InvalidArgumentError(
      absl::StrCat("unknown eviction policy \"", std::string(name), "\" (want lru or s3fifo)"));
}

}  // namespace kvtier::store
