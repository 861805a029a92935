// InProcessPageStore: a PageStoreBackend held in a map, for tests and the
// simulator. It follows the store's contract (atomic batches,
// content-addressed puts, checksums verified on put and get, pins) and can
// inject the faults a real store shows: being down (UNAVAILABLE at once),
// hanging (calls block until the mode changes or the store is destroyed),
// added latency, and lost pages.
//
// Thread-safe. Hung calls are released by the destructor, so threads that
// are blocked in it always return.
#ifndef KVTIER_WORKER_TRANSFER_IN_PROCESS_PAGE_STORE_H_
#define KVTIER_WORKER_TRANSFER_IN_PROCESS_PAGE_STORE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "worker/transfer/page_store.h"

namespace kvtier::worker {

class InProcessPageStore : public PageStoreBackend {
 public:
  enum class Mode {
    kUp,
    kDown,  // every call fails with UNAVAILABLE
    kHang,  // every call blocks until the mode changes
  };

  InProcessPageStore() = default;
  ~InProcessPageStore() override;
  InProcessPageStore(const InProcessPageStore&) = delete;
  InProcessPageStore& operator=(const InProcessPageStore&) = delete;

  absl::Status Put(absl::Span<const StoredPage> pages) override;
  absl::StatusOr<std::vector<FetchedPage>> Get(absl::Span<const PageKey> keys) override;
  // Ids are 16 bytes, as a real store's: a counter, big-endian.
  absl::StatusOr<std::string> Pin(absl::Span<const PageKey> keys, uint64_t ttl_ms,
                                  std::string_view pin_id) override;
  absl::Status Unpin(std::string_view pin_id) override;
  absl::StatusOr<uint32_t> LookupPrefix(absl::Span<const Hash128> chain,
                                        uint32_t n_layers) override;

  // Fault injection.
  void SetMode(Mode mode);
  // Every call sleeps this long before it acts (0: none).
  void SetLatencyMicros(int64_t latency_us);
  // The next Get of `key` reports kLost and the page is dropped, as a store
  // does when the stored bytes fail their checksum. NOT_FOUND if not stored.
  absl::Status MarkLost(const PageKey& key);
  // Replaces the stored bytes of `key` by `bytes`, keeping the stored
  // layout and checksum, as a store whose memory was damaged after the
  // checksum was taken would answer. NOT_FOUND if not stored.
  absl::Status Corrupt(const PageKey& key, std::string bytes);
  // Replaces the stored layout of `key` (a page written by a worker with
  // another page shape). NOT_FOUND if not stored.
  absl::Status SetLayout(const PageKey& key, const PageLayout& layout);

  // Observers for tests.
  bool Contains(const PageKey& key) const;
  size_t page_count() const;
  // Keys held by at least one live pin.
  size_t pinned_key_count() const;
  size_t live_pin_count() const;
  uint64_t put_calls() const;
  uint64_t get_calls() const;
  uint64_t lookup_calls() const;
  // Pin calls that reached the store (creating or extending a pin).
  uint64_t pin_calls() const;

 private:
  // Blocks while the mode is kHang; UNAVAILABLE when kDown or shut down.
  absl::Status EnterCall() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  bool NotHung() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return mode_ != Mode::kHang || shutting_down_;
  }

  mutable absl::Mutex mu_;
  Mode mode_ ABSL_GUARDED_BY(mu_) = Mode::kUp;
  bool shutting_down_ ABSL_GUARDED_BY(mu_) = false;
  int64_t latency_us_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<PageKey, StoredPage> pages_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<PageKey> lost_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::vector<PageKey>> pins_ ABSL_GUARDED_BY(mu_);
  uint64_t pins_created_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t put_calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t get_calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t lookup_calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pin_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int active_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_TRANSFER_IN_PROCESS_PAGE_STORE_H_
