// UcxTagReceive: RAII owner of one posted tagged receive (ucp_tag_recv_nbx)
// into memory the caller owns, e.g. a reserved slot of the server's arena.
//
// Tagged messages land in any memory at transport speed: UCX 1.13 moves
// large ones by rendezvous over its rma_bw lanes (cma on one host, tcp
// zcopy over TCP), which need no registration of the receive buffer by the
// transports that emulate RMA otherwise (kvstore/dataplane/DATA_PLANE.md).
//
// States: posted -> done (completed, with a status). Cancel() asks UCX to
// give the receive up; a receive already matched to a message still runs to
// its end, so the buffer stays in use until done() returns true.
//
// Thread-safety: not thread-safe; one owner at a time (the worker itself is
// in UCS_THREAD_MODE_MULTI). REQUIRES: the worker and the buffer outlive the
// object. The destructor cancels and progresses the worker until the receive
// is done, so the buffer is never written after it.
#ifndef KVTIER_UCX_TAG_RECEIVE_H_
#define KVTIER_UCX_TAG_RECEIVE_H_

#include <ucp/api/ucp.h>

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "ucx/worker.h"

namespace kvtier::ucx {

class UcxTagReceive {
 public:
  // Posts a receive of `bytes` (> 0) into `buffer` for the message tagged
  // `tag` (all 64 bits match); `exact`: a shorter message is an error too.
  // INVALID_ARGUMENT for an empty buffer; the converted UCX error when it
  // cannot be posted.
  static absl::StatusOr<std::unique_ptr<UcxTagReceive>> Post(UcxWorker* worker, void* buffer,
                                                            uint64_t bytes, uint64_t tag,
                                                            bool exact = true);
  ~UcxTagReceive();
  UcxTagReceive(const UcxTagReceive&) = delete;
  UcxTagReceive& operator=(const UcxTagReceive&) = delete;

  // True once the receive completed (with data, an error or a cancel); the
  // buffer is free again then. Does not progress the worker.
  bool done();
  // REQUIRES done(). OK when the message fit (exactly `bytes` if `exact`);
  // DATA_LOSS when a longer (or, if exact, shorter) message matched;
  // CANCELLED after Cancel; else the converted UCX error.
  const absl::Status& status() const { return status_; }
  // REQUIRES done() and status() OK: the bytes that arrived.
  uint64_t length() const { return length_; }
  // Asks UCX to drop the receive if no message matched it yet.
  void Cancel();

 private:
  // Records the outcome of a completed receive.
  void Finish(ucs_status_t status, uint64_t length);
  UcxTagReceive(UcxWorker* worker, uint64_t bytes, bool exact)
      : worker_(worker), bytes_(bytes), exact_(exact) {}

  UcxWorker* const worker_;
  const uint64_t bytes_;
  const bool exact_;
  uint64_t length_ = 0;
  void* request_ = nullptr;  // null once done
  absl::Status status_;
};

}  // namespace kvtier::ucx

#endif  // KVTIER_UCX_TAG_RECEIVE_H_
