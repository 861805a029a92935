// UcxEndpoint: RAII owner of one UCP endpoint to a peer worker, and the
// one-sided write of many page-sized segments through it.
//
// A write is a transfer with explicit states, one per segment and one for
// the batch:
//   prepare  the caller lists (local bytes, remote address) segments;
//   post     ucp_put_nbx for each segment, at most `window` in flight;
//   poll     completed requests are checked and released as the window
//            slides; then ucp_ep_flush_nbx makes every byte visible remotely;
//   release  every request is freed before Write returns, on success and on
//            failure alike, so the caller's buffers are free again.
// A deadline that passes, or an error, fails the endpoint: it is closed
// (forcibly, which completes its outstanding requests) and must be replaced
// by a new one. Peer failure marks it failed where the transports can
// detect it (UCP_ERR_HANDLING_MODE_PEER; not shared memory in UCX 1.13).
//
// Thread-safety: Write may be called from several threads at once (the
// worker is in UCS_THREAD_MODE_MULTI); a flush covers the writes of all.
// REQUIRES: the worker outlives the endpoint; remote keys unpacked on it are
// destroyed before it.
#ifndef KVTIER_UCX_ENDPOINT_H_
#define KVTIER_UCX_ENDPOINT_H_

#include <ucp/api/ucp.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "ucx/memory.h"
#include "ucx/worker.h"

namespace kvtier::ucx {

struct WriteSegment {
  const void* local = nullptr;
  uint64_t bytes = 0;
  uint64_t remote_address = 0;
};

// One tagged message: `bytes` from `local`, matched by the peer's receive
// posted for `tag` (UcxTagReceive).
struct SendSegment {
  const void* local = nullptr;
  uint64_t bytes = 0;
  uint64_t tag = 0;
};

class UcxEndpoint {
 public:
  // How long Flush after Connect may take (the peer's progress thread
  // answers the wireup); used by both ends of a data-plane session.
  static constexpr absl::Duration kWireupTimeout = absl::Seconds(10);

  // Connects to the worker whose address is `peer_address`
  // (UcxWorker::address() of the peer). INVALID_ARGUMENT for an empty
  // address; the converted UCX error when the endpoint cannot be created.
  static absl::StatusOr<std::unique_ptr<UcxEndpoint>> Connect(UcxWorker* worker,
                                                              absl::string_view peer_address);
  ~UcxEndpoint();
  UcxEndpoint(const UcxEndpoint&) = delete;
  UcxEndpoint& operator=(const UcxEndpoint&) = delete;

  // Runs `post` with the endpoint while it is open, and keeps Close (this
  // thread's or another's) waiting until `post` returns; UNAVAILABLE when it
  // is closed. `post` may only start operations (ucp_*_nbx, unpack keys,
  // print): it must not progress the worker or wait.
  absl::Status Use(absl::FunctionRef<absl::Status(ucp_ep_h)> post) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // A peer's packed remote key, unpacked for this endpoint. UNAVAILABLE
  // when closed; UcxRemoteKey::Unpack's errors.
  absl::StatusOr<std::unique_ptr<UcxRemoteKey>> UnpackKey(absl::string_view packed) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // Closes the endpoint forcibly (its outstanding requests complete with an
  // error) once no Use is running; later calls get UNAVAILABLE. Idempotent.
  void Close() ABSL_LOCKS_EXCLUDED(mu_);
  // The transport of the lane that carries active messages (and so tagged
  // eager messages and rendezvous control), e.g. "tcp", "sysv", "posix",
  // "rc_mlx5", read from ucp_ep_print_info; empty when closed or unknown.
  std::string AmTransport() const ABSL_LOCKS_EXCLUDED(mu_);
  // True after a peer error, a failed write or a deadline: replace it.
  bool failed() const { return failed_.load(std::memory_order_acquire); }

  // Writes every segment into the peer's memory covered by `rkey` and
  // flushes. `window` >= 1 bounds the requests in flight. UNAVAILABLE when
  // the endpoint failed (now or before), DEADLINE_EXCEEDED past `deadline`;
  // on any error the endpoint is failed and closed.
  absl::Status Write(absl::Span<const WriteSegment> segments, const UcxRemoteKey& rkey,
                     size_t window, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_) {
    return Transfer(/*read=*/false, segments, rkey, window, deadline);
  }
  // The reverse: reads each segment's bytes from remote_address into
  // `local` (which must be writable), with the same states and errors.
  absl::Status Read(absl::Span<const WriteSegment> segments, const UcxRemoteKey& rkey,
                    size_t window, absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_) {
    return Transfer(/*read=*/true, segments, rkey, window, deadline);
  }
  // Sends each segment as a tagged message (ucp_tag_send_nbx), at most
  // `window` in flight, and returns once every send completed locally (for
  // rendezvous-sized messages: once the peer has fetched the bytes), so the
  // caller's buffers are free again. The same errors as Write; no flush.
  absl::Status Send(absl::Span<const SendSegment> segments, size_t window, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Waits until the endpoint is connected (its wireup with the peer done)
  // and everything posted on it is complete; the peer's worker must be
  // progressing. Call once after Connect: UCX 1.13 aborts the process when
  // a peer fails while a wireup message to it is still pending, which an
  // endpoint that carries no traffic (mapped-arena sessions) would leave
  // behind. The same errors as Write.
  absl::Status Flush(absl::Time deadline) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit UcxEndpoint(UcxWorker* worker) : worker_(worker) {}
  absl::Status Transfer(bool read, absl::Span<const WriteSegment> segments,
                        const UcxRemoteKey& rkey, size_t window, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The windowed post/poll/release loop shared by Transfer and Send:
  // post(i) starts segment i; a flush follows when `flush`.
  absl::Status Run(size_t count, absl::FunctionRef<ucs_status_ptr_t(ucp_ep_h, size_t)> post,
                   absl::string_view op, bool flush, size_t window, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);
  static void OnPeerError(void* arg, ucp_ep_h ep, ucs_status_t status);
  // Progresses until `request` completes or `deadline`; its status.
  absl::Status Wait(void* request, absl::Time deadline, absl::string_view what);

  UcxWorker* const worker_;
  std::atomic<bool> failed_{false};
  // Operations are posted under a reader lock and the endpoint is closed
  // under the writer lock, so no thread posts on an endpoint another thread
  // closed. UCX's worker lock is always taken inside mu_, never around it.
  mutable absl::Mutex mu_;
  ucp_ep_h ep_ ABSL_GUARDED_BY(mu_) = nullptr;
};

}  // namespace kvtier::ucx

#endif  // KVTIER_UCX_ENDPOINT_H_
