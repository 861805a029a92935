// Admission control of the service: what one server takes on at once.
//
//   InflightBytes: a byte budget for the page bytes that requests and
//   replies hold outside the store's tiers (inline puts, inline and region
//   gets). A request that does not fit is RESOURCE_EXHAUSTED at once and
//   changes nothing; nothing waits for room, so a client backs off.
//
//   WaitingPool: threads for the handlers that wait on UCX (region
//   transfers, tagged commits, endpoint creation), so that no gRPC callback
//   thread blocks on the data plane. A full queue is RESOURCE_EXHAUSTED.
//
// Thread-safety: both classes are thread-safe.
#ifndef KVTIER_KVSTORE_SERVICE_ADMISSION_H_
#define KVTIER_KVSTORE_SERVICE_ADMISSION_H_

#include <cstdint>
#include <deque>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

namespace kvtier::store {

class InflightBytes {
 public:
  // Bytes held while it lives; returned when destroyed. Move-only.
  class Grant {
   public:
    Grant() = default;
    Grant(Grant&& other) noexcept;
    Grant& operator=(Grant&& other) noexcept;
    Grant(const Grant&) = delete;
    Grant& operator=(const Grant&) = delete;
    ~Grant();
    uint64_t bytes() const { return bytes_; }

   private:
    friend class InflightBytes;
    Grant(InflightBytes* owner, uint64_t bytes) : owner_(owner), bytes_(bytes) {}
    InflightBytes* owner_ = nullptr;
    uint64_t bytes_ = 0;
  };

  // REQUIRES: cap_bytes > 0.
  explicit InflightBytes(uint64_t cap_bytes) : cap_bytes_(cap_bytes) {}
  InflightBytes(const InflightBytes&) = delete;
  InflightBytes& operator=(const InflightBytes&) = delete;

  // Takes `bytes` of the budget, or RESOURCE_EXHAUSTED naming `what` when
  // they do not fit beside what is already held (a request larger than the
  // whole cap never fits).
  absl::StatusOr<Grant> Acquire(uint64_t bytes, absl::string_view what)
      ABSL_LOCKS_EXCLUDED(mu_);

  uint64_t cap_bytes() const { return cap_bytes_; }
  uint64_t held_bytes() const ABSL_LOCKS_EXCLUDED(mu_);
  // Requests refused so far.
  uint64_t refused() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Release(uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  const uint64_t cap_bytes_;
  mutable absl::Mutex mu_;
  uint64_t held_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t refused_ ABSL_GUARDED_BY(mu_) = 0;
};

class WaitingPool {
 public:
  // REQUIRES: threads > 0, max_queued > 0.
  WaitingPool(int threads, size_t max_queued);
  // Runs every task already queued, then joins the threads.
  ~WaitingPool();
  WaitingPool(const WaitingPool&) = delete;
  WaitingPool& operator=(const WaitingPool&) = delete;

  // Queues `task` to run on a pool thread. RESOURCE_EXHAUSTED (and `task`
  // is destroyed unrun) when max_queued tasks are waiting already.
  absl::Status Submit(absl::AnyInvocable<void() &&> task) ABSL_LOCKS_EXCLUDED(mu_);

  // Tasks taken from the queue (running or done) so far.
  uint64_t started() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);
  bool HasTaskOrStopping() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || !queue_.empty();
  }

  const size_t max_queued_;
  mutable absl::Mutex mu_;
  std::deque<absl::AnyInvocable<void() &&>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t started_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::thread> threads_;  // const after construction
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_ADMISSION_H_
