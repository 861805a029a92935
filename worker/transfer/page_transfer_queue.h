// PageTransferQueue: asynchronous, bounded, deadline-bound page transfers
// between the worker and a PageStoreBackend.
//
// Every transfer (a batch of puts, a batch of gets, an unpin) moves through
// explicit states:
//
//   kQueued --(a thread takes it)--> kRunning --(backend returns)--> kDone
//      |                                 |
//      +--(deadline passes)--> kExpired <+ (the waiter stops waiting; a
//                                           running call's late result is
//                                           dropped when it returns)
//
// A transfer holds a place in the in-flight window from Submit until it is
// released (Wait or Abandon) *and* its backend call, if one started, has
// returned; so a store that hangs fills the window and later submits fail
// with RESOURCE_EXHAUSTED instead of piling up work. Wait never blocks past
// the transfer's deadline: a store that is down or hung surfaces as
// UNAVAILABLE or DEADLINE_EXCEEDED, never as a hang.
//
// Thread-safe. Deadlines are measured on the real monotonic clock because
// the waits are real waits.
#ifndef KVTIER_WORKER_TRANSFER_PAGE_TRANSFER_QUEUE_H_
#define KVTIER_WORKER_TRANSFER_PAGE_TRANSFER_QUEUE_H_

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "worker/transfer/page_store.h"

namespace kvtier::worker {

struct TransferQueueOptions {
  // Threads that run backend calls; calls of one transfer never overlap.
  int n_threads = 2;
  // Transfers held in the window at once (queued, running or finished but
  // not yet released).
  int max_inflight_transfers = 64;
  // Pages across the transfers in the window.
  int max_inflight_pages = 4096;
  // Largest batch accepted by one submit.
  int max_batch_pages = 512;

  absl::Status Validate() const;
};

enum class TransferState : uint8_t { kQueued, kRunning, kDone, kExpired };
const char* TransferStateName(TransferState state);

using TransferId = uint64_t;

// The outcome of one transfer. `pages` is filled by gets only.
struct TransferResult {
  absl::Status status;
  std::vector<FetchedPage> pages;
};

class PageTransferQueue {
 public:
  // The work of one transfer, run on a queue thread.
  using Work = std::function<TransferResult(PageStoreBackend*)>;

  // `backend` must outlive the queue.
  static absl::StatusOr<std::unique_ptr<PageTransferQueue>> Create(PageStoreBackend* backend,
                                                                   TransferQueueOptions options);
  // Waits for running backend calls to return; queued transfers are dropped.
  ~PageTransferQueue();
  PageTransferQueue(const PageTransferQueue&) = delete;
  PageTransferQueue& operator=(const PageTransferQueue&) = delete;

  // Submits `work`, which moves `n_pages` pages and must finish within
  // `timeout`. RESOURCE_EXHAUSTED when the window is full (nothing is
  // queued then), INVALID_ARGUMENT for a batch over max_batch_pages or a
  // non-positive timeout. `what` names the transfer in error messages.
  absl::StatusOr<TransferId> Submit(std::string what, int n_pages, absl::Duration timeout,
                                    Work work);

  // Conveniences over Submit for the backend's calls.
  absl::StatusOr<TransferId> SubmitPut(std::vector<StoredPage> pages, absl::Duration timeout);
  absl::StatusOr<TransferId> SubmitGet(std::vector<PageKey> keys, absl::Duration timeout);

  // The state of a transfer not yet released. NOT_FOUND otherwise.
  absl::StatusOr<TransferState> State(TransferId id) const;

  // Blocks until the transfer finishes or its deadline passes, then
  // releases it. The result's status is the backend's, or
  // DEADLINE_EXCEEDED, or NOT_FOUND for an unknown id.
  TransferResult Wait(TransferId id);

  // Releases a transfer without waiting; its result is dropped.
  void Abandon(TransferId id);

  int inflight_transfers() const;
  int inflight_pages() const;

 private:
  struct Transfer {
    std::string what;
    int n_pages = 0;
    absl::Time deadline;
    Work work;
    TransferState state = TransferState::kQueued;
    bool released = false;    // Wait or Abandon is done with it
    bool with_thread = true;  // queued or running: a thread still owns it
    TransferResult result;
  };

  PageTransferQueue(PageStoreBackend* backend, TransferQueueOptions options);
  void ThreadMain();
  bool HasWorkOrStop() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void EraseLocked(TransferId id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Const after construction.
  PageStoreBackend* const backend_;
  const TransferQueueOptions options_;
  std::vector<std::thread> threads_;

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  TransferId next_id_ ABSL_GUARDED_BY(mu_) = 1;
  absl::flat_hash_map<TransferId, std::unique_ptr<Transfer>> transfers_ ABSL_GUARDED_BY(mu_);
  std::deque<TransferId> queue_ ABSL_GUARDED_BY(mu_);
  int inflight_pages_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_TRANSFER_PAGE_TRANSFER_QUEUE_H_
