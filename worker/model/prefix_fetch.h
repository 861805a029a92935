// PrefixFetch: loads the stored pages of a prompt prefix, every layer, as
// batched asynchronous gets through a PageTransferQueue, in layer order, so
// the model can prefill the rest of the prompt layer by layer while later
// layers are still on their way (the loads overlap the prefill).
//
// The pages land where the caller's prompt rows are (PrefixRows): an fp32
// page's K half and V half go into the K and V rows as the backend copies
// them out of shared memory (PageStoreBackend::GetInto), and any other
// page is copied there on the queue's thread, so neither a second copy
// nor the fault-in of fresh buffers falls on the thread that prefills.
//
// Every page from the store is untrusted. TakeLayer serves a layer only
// when each of its pages came back kOk under the key asked for, with the
// cache's layout, exactly layout.PageBytes() bytes and bytes whose XXH3
// matches the checksum the store reported; otherwise it names the first
// bad page (NOT_FOUND when the store no longer holds it, DATA_LOSS for a
// wrong key, layout, size or checksum), counts it, and serves nothing of
// that layer. A layer's rows hold anything until TakeLayer served it.
//
// Bounds: at most `window_pages` pages in flight (and whatever the queue's
// own window admits; a full queue makes the fetch wait for its oldest
// batch). Thread-safety: none; one admission thread. The queue must
// outlive the fetch.
#ifndef KVTIER_WORKER_MODEL_PREFIX_FETCH_H_
#define KVTIER_WORKER_MODEL_PREFIX_FETCH_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "worker/transfer/page_transfer_queue.h"

namespace kvtier::model {

struct PrefixFetchOptions {
  // Pages per get batch. Default 256; 1..the queue's max_batch_pages.
  uint32_t batch_pages = 256;
  // Pages in flight at once. Default 512: two batches, about a layer ahead
  // of the prefill (`kvtier-eval prefix` at 8K: 1024 and 2048 no faster;
  // 4096 slower while pages landed in fresh memory); >= batch_pages.
  uint32_t window_pages = 512;
  // Deadline of each batch. Default 10 s.
  absl::Duration timeout = absl::Seconds(10);

  absl::Status Validate() const;
};

struct PrefixFetchStats {
  uint64_t pages_loaded = 0;  // served by TakeLayer
  uint64_t bytes_loaded = 0;
  uint64_t batches = 0;
  uint64_t pages_missing = 0;   // not found or lost in the store
  uint64_t pages_rejected = 0;  // wrong key, layout, size or checksum
  // Time at least one batch was inside the store call: the load itself.
  double busy_s = 0;
  // Time TakeLayer spent waiting for batches (load not hidden by compute).
  double wait_s = 0;
};

// Where one layer's prefix lands: room for chain.size() * page_size rows
// of K and of V, fp32 [tokens][n_kv_heads * head_dim], owned by the caller.
struct PrefixRows {
  float* k = nullptr;
  float* v = nullptr;
};

class PrefixFetch {
 public:
  // Starts fetching pages [0, chain.size()) of layers [0, n_layers) into
  // `rows` (one per layer), which must stay valid, and unread until their
  // layer was taken, for the fetch's life.
  static absl::StatusOr<std::unique_ptr<PrefixFetch>> Start(worker::PageTransferQueue* queue,
                                                            std::vector<Hash128> chain,
                                                            uint32_t n_layers,
                                                            const PageLayout& layout,
                                                            const PrefixFetchOptions& options,
                                                            std::vector<PrefixRows> rows);
  // Submits nothing more and waits until no get writes into the rows any
  // more (the calls already running: each ends within the store client's
  // own deadlines), so that the caller may then reuse the rows' memory.
  ~PrefixFetch();
  PrefixFetch(const PrefixFetch&) = delete;
  PrefixFetch& operator=(const PrefixFetch&) = delete;

  // Waits for `layer`'s pages and checks them: on OK the layer's rows hold
  // the prefix's K and V. REQUIRES: layers are taken in order 0, 1, ...,
  // each once.
  absl::Status TakeLayer(uint32_t layer);

  uint32_t n_pages() const { return static_cast<uint32_t>(chain_.size()); }
  // Busy time is final once every layer was taken.
  PrefixFetchStats stats() const;

 private:
  struct Batch {
    uint32_t layer = 0;
    uint32_t begin = 0;  // first page
    uint32_t count = 0;
    worker::TransferId id = 0;
    // Per page, whether its bytes are in the rows and hash to the checksum
    // the store reported; written by the queue's thread before the batch
    // completes, so that copying and hashing overlap the prefill.
    std::shared_ptr<std::vector<uint8_t>> landed;
  };
  // Shared with the batches' work, which runs on the queue's threads.
  struct Shared {
    absl::Mutex mu;
    // Store-call intervals.
    int active ABSL_GUARDED_BY(mu) = 0;
    absl::Time busy_since ABSL_GUARDED_BY(mu);
    absl::Duration busy ABSL_GUARDED_BY(mu);
    // Work that may write into the rows now; none starts once closed.
    int writing ABSL_GUARDED_BY(mu) = 0;
    bool closed ABSL_GUARDED_BY(mu) = false;
  };

  PrefixFetch(worker::PageTransferQueue* queue, std::vector<Hash128> chain, uint32_t n_layers,
              const PageLayout& layout, const PrefixFetchOptions& options,
              std::vector<PrefixRows> rows);
  // Submits batches in (layer, page) order while the window has room.
  // Returns false when the queue refused one (full).
  absl::StatusOr<bool> TopUp();
  // The checks of one finished batch; the pages are in the rows already.
  absl::Status Check(const Batch& batch, const worker::TransferResult& result);

  worker::PageTransferQueue* const queue_;
  const std::vector<Hash128> chain_;
  const uint32_t n_layers_;
  const PageLayout layout_;
  const PrefixFetchOptions options_;
  const std::vector<PrefixRows> rows_;
  std::shared_ptr<Shared> shared_ = std::make_shared<Shared>();
  std::deque<Batch> in_flight_;  // submission order
  uint32_t next_layer_ = 0;      // next batch to submit
  uint32_t next_page_ = 0;
  uint32_t pages_in_flight_ = 0;
  uint32_t next_take_ = 0;
  PrefixFetchStats stats_;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_PREFIX_FETCH_H_
