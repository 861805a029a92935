// PageStoreBackend: the worker's synchronous view of a KV page store.
//
// The cache manager never calls a backend directly: it goes through
// PageTransferQueue (page_transfer_queue.h), which runs backend calls on its
// own threads with a bounded in-flight window and deadlines. Two backends
// exist: InProcessPageStore (tests and the simulator) and
// ClientPageStore (over client/StoreClient, in kvtier_worker_client).
//
// Semantics follow proto/kvtier/v1/store.proto: a put batch is atomic,
// pages are content-addressed (putting a stored key again is not an
// error), gets report missing and lost pages per page, pins keep stored
// pages until released or expired.
#ifndef KVTIER_WORKER_TRANSFER_PAGE_STORE_H_
#define KVTIER_WORKER_TRANSFER_PAGE_STORE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/page_destination.h"
#include "common/page_key.h"
#include "common/page_layout.h"

namespace kvtier::worker {

// One page on its way to the store.
struct StoredPage {
  PageKey key;
  PageLayout layout;
  uint64_t checksum = 0;  // PageChecksum(bytes), computed by the writer
  std::string bytes;      // exactly layout.PageBytes() bytes
};

enum class FetchStatus : uint8_t {
  kOk = 0,
  kNotFound = 1,
  // The store held the page but its bytes failed their checksum; the page
  // is gone. The caller must recompute it or fail; never use other bytes.
  kLost = 2,
};

const char* FetchStatusName(FetchStatus status);

// One page on its way back. `layout`, `checksum` and `bytes` are set only
// when status is kOk.
struct FetchedPage {
  PageKey key;
  FetchStatus status = FetchStatus::kNotFound;
  PageLayout layout;
  uint64_t checksum = 0;
  std::string bytes;
  // GetInto only: the bytes are in the page's destination instead of
  // `bytes` (empty then), and the backend checked that what it wrote there
  // hashes to `checksum`.
  bool in_destination = false;
};

// Thread-safe: every method may be called from several threads at once.
// Calls block; a backend that cannot reach its store returns UNAVAILABLE
// (or blocks until its own transport timeout, which the transfer queue's
// deadline bounds from the caller's side).
class PageStoreBackend {
 public:
  virtual ~PageStoreBackend() = default;

  // Stores every page or none. REQUIRES: !pages.empty().
  virtual absl::Status Put(absl::Span<const StoredPage> pages) = 0;

  // One result per key, same order. REQUIRES: !keys.empty().
  virtual absl::StatusOr<std::vector<FetchedPage>> Get(absl::Span<const PageKey> keys) = 0;

  // As Get, and every OK page whose size is its destination's total
  // (destinations: empty or one per key) and whose bytes hash to its
  // checksum lands there instead (FetchedPage::in_destination); the others
  // come in `bytes`. Writes into the destinations end when the call
  // returns. A destination whose page came back otherwise may hold
  // anything. This default gets the pages and lands them (LandPages); a
  // backend that can place the bytes on their way in overrides it and
  // lands the rest the same way.
  virtual absl::StatusOr<std::vector<FetchedPage>> GetInto(
      absl::Span<const PageKey> keys, absl::Span<const PageDestination> destinations);

  // Pins `keys` for `ttl_ms`. An empty pin_id creates a pin; otherwise the
  // pin is extended and `keys` added to it. Returns the pin id: opaque,
  // never empty, 16 bytes from a real store. NOT_FOUND when a key is not
  // stored or the pin is unknown, INVALID_ARGUMENT for a pin_id that is
  // not 16 bytes (nothing is pinned then).
  virtual absl::StatusOr<std::string> Pin(absl::Span<const PageKey> keys, uint64_t ttl_ms,
                                          std::string_view pin_id) = 0;

  // Releases a pin. NOT_FOUND for an empty, unknown or expired pin_id;
  // INVALID_ARGUMENT for one that is not 16 bytes.
  virtual absl::Status Unpin(std::string_view pin_id) = 0;

  // How many leading pages of `chain` are stored for every layer in
  // [0, n_layers): the prefix a new sequence may load instead of
  // recomputing. One round trip; the answer is a hint (a page may be
  // evicted before it is read). REQUIRES: n_layers > 0.
  virtual absl::StatusOr<uint32_t> LookupPrefix(absl::Span<const Hash128> chain,
                                                uint32_t n_layers) = 0;

 protected:
  // Copies each OK page still in `bytes` whose size is its destination's
  // total into it, and keeps it there (in_destination, bytes emptied) when
  // the copy hashes to its checksum. REQUIRES: destinations empty or one
  // per page.
  static void LandPages(absl::Span<const PageDestination> destinations,
                        std::vector<FetchedPage>& pages);
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_TRANSFER_PAGE_STORE_H_
