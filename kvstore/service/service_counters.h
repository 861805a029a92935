// ServiceCounters: what the service moved and found, for metrics
// (kvstore/metrics/server_metrics.h): page bytes by data path, and how
// much of each Lookup's chain was stored.
//
// Thread-safety: thread-safe (relaxed atomics; a snapshot is not one
// instant across counters).
#ifndef KVTIER_KVSTORE_SERVICE_SERVICE_COUNTERS_H_
#define KVTIER_KVSTORE_SERVICE_SERVICE_COUNTERS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace kvtier::store {

// How page bytes travel between a client and the store.
enum class BytePath : uint8_t {
  kInline = 0,     // inside the gRPC messages
  kDataPlane = 1,  // UCX: the server reads or writes the client's region, or
                   // the client writes into a reserved slot
  kMapped = 2,     // a trusted client reads the arena itself (gets only)
  kLane = 3,       // a local lane's shared segment
  kReplica = 4,    // another node's ReplicaPut (puts only)
};
inline constexpr size_t kBytePaths = 5;
const char* BytePathName(BytePath path);

class ServiceCounters {
 public:
  // Lookup prefixes are counted in buckets: 0, 1, 2-3, 4-7, ..., and the
  // last one from 2^(kPrefixBuckets - 2) on.
  static constexpr size_t kPrefixBuckets = 18;
  // The bucket of a prefix of `pages` pages.
  static size_t PrefixBucket(uint64_t pages);
  // Smallest prefix of bucket `b` (0 for bucket 0).
  static uint64_t BucketFloor(size_t b) { return b == 0 ? 0 : uint64_t{1} << (b - 1); }

  void AddPut(BytePath path, uint64_t bytes) {
    put_bytes_[static_cast<size_t>(path)].fetch_add(bytes, std::memory_order_relaxed);
  }
  void AddGet(BytePath path, uint64_t bytes) {
    get_bytes_[static_cast<size_t>(path)].fetch_add(bytes, std::memory_order_relaxed);
  }
  void AddLookup(uint64_t chain_pages, uint64_t prefix_pages);

  struct Snapshot {
    std::array<uint64_t, kBytePaths> put_bytes{};
    std::array<uint64_t, kBytePaths> get_bytes{};
    uint64_t lookups = 0;
    uint64_t lookup_chain_pages = 0;
    uint64_t lookup_prefix_pages = 0;
    std::array<uint64_t, kPrefixBuckets> prefix_buckets{};
  };
  Snapshot Read() const;

 private:
  std::array<std::atomic<uint64_t>, kBytePaths> put_bytes_{};
  std::array<std::atomic<uint64_t>, kBytePaths> get_bytes_{};
  std::atomic<uint64_t> lookups_{0};
  std::atomic<uint64_t> lookup_chain_pages_{0};
  std::atomic<uint64_t> lookup_prefix_pages_{0};
  std::array<std::atomic<uint64_t>, kPrefixBuckets> prefix_buckets_{};
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_SERVICE_COUNTERS_H_
