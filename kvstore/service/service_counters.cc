#include "kvstore/service/service_counters.h"

#include <bit>

namespace kvtier::store {

const char* BytePathName(BytePath path) {
  switch (path) {
    case BytePath::kInline:
      return "inline";
    case BytePath::kDataPlane:
      return "data_plane";
    case BytePath::kMapped:
      return "mapped";
    case BytePath::kLane:
      return "lane";
    case BytePath::kReplica:
      return "replica";
  }
  return "unknown";
}

size_t ServiceCounters::PrefixBucket(uint64_t pages) {
  if (pages == 0) return 0;
  const size_t b = static_cast<size_t>(std::bit_width(pages));  // 1 -> 1, 2..3 -> 2, ...
  return b < kPrefixBuckets ? b : kPrefixBuckets - 1;
}

void ServiceCounters::AddLookup(uint64_t chain_pages, uint64_t prefix_pages) {
  lookups_.fetch_add(1, std::memory_order_relaxed);
  lookup_chain_pages_.fetch_add(chain_pages, std::memory_order_relaxed);
  lookup_prefix_pages_.fetch_add(prefix_pages, std::memory_order_relaxed);
  prefix_buckets_[PrefixBucket(prefix_pages)].fetch_add(1, std::memory_order_relaxed);
}

ServiceCounters::Snapshot ServiceCounters::Read() const {
  Snapshot s;
  for (size_t i = 0; i < kBytePaths; ++i) {
    s.put_bytes[i] = put_bytes_[i].load(std::memory_order_relaxed);
    s.get_bytes[i] = get_bytes_[i].load(std::memory_order_relaxed);
  }
  s.lookups = lookups_.load(std::memory_order_relaxed);
  s.lookup_chain_pages = lookup_chain_pages_.load(std::memory_order_relaxed);
  s.lookup_prefix_pages = lookup_prefix_pages_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < kPrefixBuckets; ++i) {
    s.prefix_buckets[i] = prefix_buckets_[i].load(std::memory_order_relaxed);
  }
  return s;
}

}  // namespace kvtier::store
