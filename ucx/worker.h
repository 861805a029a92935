// UcxWorker: the RAII owner of a UCP worker, and the thread that progresses
// a worker so that remote operations against it (RMA emulated over TCP, the
// endpoint handshake) complete while no local call is waiting.
//
// Workers are created in UCS_THREAD_MODE_MULTI: the progress thread and any
// number of callers post and progress on one worker.
//
//   ASSIGN_OR_RETURN(auto context, UcxContext::Create(UcxOptions{}));
//   ASSIGN_OR_RETURN(auto worker, UcxWorker::Create(*context));
//   UcxProgressThread progress(worker.get());
//
// Thread-safety: UcxWorker is thread-safe after Create. Destruction order:
// progress thread, then everything using the worker (endpoints, memory),
// then the worker, then the context.
#ifndef KVTIER_UCX_WORKER_H_
#define KVTIER_UCX_WORKER_H_

#include <ucp/api/ucp.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "common/spin.h"
#include "ucx/context.h"

namespace kvtier::ucx {

using ::kvtier::AdaptiveSpin;

class UcxWorker {
 public:
  // REQUIRES: context outlives the worker.
  static absl::StatusOr<std::unique_ptr<UcxWorker>> Create(const UcxContext& context);
  ~UcxWorker();
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;

  ucp_worker_h get() const { return worker_; }
  // The worker's address, for the peer's ucp_ep_create.
  const std::string& address() const { return address_; }
  // One round of progress; the number of events processed.
  unsigned Progress() { return ucp_worker_progress(worker_); }
  // Blocks until the worker has events or `timeout_ms` passes (after arming
  // its event fd). Returns at once when events are pending.
  void WaitForEvents(int timeout_ms);

  // Receives and discards up to `max_messages` tagged messages that arrived
  // while no posted receive wanted them; returns how many. UCX keeps such a
  // message (an eager one's bytes, a rendezvous one's header) until a
  // receive matches it, so a peer sending tags nobody posted grows the
  // process without bound. Only for a worker whose receives are all posted
  // before their senders may send (then nothing legitimate waits unmatched):
  // a message dropped here is one no receive would have taken. Rendezvous
  // messages are refused without their data (a truncated receive).
  size_t DropUnexpectedTagged(size_t max_messages);
  uint64_t dropped_tagged_messages() const {
    return dropped_messages_.load(std::memory_order_relaxed);
  }
  uint64_t dropped_tagged_bytes() const { return dropped_bytes_.load(std::memory_order_relaxed); }

 private:
  UcxWorker(ucp_worker_h worker, std::string address, int event_fd)
      : worker_(worker), address_(std::move(address)), event_fd_(event_fd) {}
  ucp_worker_h const worker_;
  const std::string address_;
  const int event_fd_;
  std::atomic<uint64_t> dropped_messages_{0};
  std::atomic<uint64_t> dropped_bytes_{0};
  // Where dropped messages are received: truncated receives write at most
  // these bytes, and their contents are never read.
  std::array<uint8_t, 64> sink_{};
};

// Whether a progress thread drops unexpected tagged messages
// (UcxWorker::DropUnexpectedTagged) after every round of progress.
enum class UnexpectedTagged { kKeep, kDrop };

// Progresses a worker until destroyed, sleeping on its event fd when idle.
// `on_idle` (may be empty) runs at least every `idle_period_ms` on this
// thread; the server sweeps expired transfers there. After an event it
// keeps polling for up to `spin` (AdaptiveSpin decides how long) before it
// sleeps again: transfers come in bursts, and a wakeup per fragment (RMA
// emulated over active messages) or per request message costs more than
// serving it; a thread that only delivers replies to callers that wait
// themselves need not spin.
class UcxProgressThread {
 public:
  // REQUIRES: worker outlives this object.
  explicit UcxProgressThread(UcxWorker* worker, std::function<void()> on_idle = {},
                             int idle_period_ms = 100,
                             absl::Duration spin = absl::Microseconds(500),
                             UnexpectedTagged unexpected = UnexpectedTagged::kKeep);
  ~UcxProgressThread();  // stops and joins
  UcxProgressThread(const UcxProgressThread&) = delete;
  UcxProgressThread& operator=(const UcxProgressThread&) = delete;

 private:
  void Loop();
  UcxWorker* const worker_;
  const std::function<void()> on_idle_;
  const int idle_period_ms_;
  const std::chrono::microseconds spin_;
  const bool drop_unexpected_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace kvtier::ucx

#endif  // KVTIER_UCX_WORKER_H_
