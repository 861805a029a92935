// Active messages of the data plane's request path (kvstore/DATA_PLANE.md,
// "Requests as active messages"): their ids and headers, the handler
// registration and a send that owns what it sends.
//
// A client sends a request (kRequestMessageId, RequestHeader + a serialized
// request) on its session's endpoint with a reply endpoint; the server's
// handler answers on that reply endpoint (kReplyMessageId, ReplyHeader + a
// serialized response or an error message).
//
// Thread-safety: SendMessage may be called from any thread. A handler runs
// on whichever thread progresses the worker; it must not progress the worker
// itself, and the message's bytes are valid only during the call.
#ifndef KVTIER_CLIENT_UCX_UCX_MESSAGE_H_
#define KVTIER_CLIENT_UCX_UCX_MESSAGE_H_

#include <ucp/api/ucp.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "client/ucx/ucx_worker.h"

namespace kvtier::ucx {

inline constexpr unsigned kRequestMessageId = 1;  // client -> server
inline constexpr unsigned kReplyMessageId = 2;    // server -> client

// RequestHeader::op values, each a serialized kvtier.v1 request answered by
// its serialized response. kMappedGet: a BatchGetRequest with
// arena_session_id, answered by a BatchGetResponse. kReservePut and
// kCommitPut: the RPCs of the same names for a put the client copies into
// the mapped arena itself (not tagged), answered by a ReservePutResponse
// and a BatchPutResponse.
inline constexpr uint32_t kMappedGetOp = 1;
inline constexpr uint32_t kReservePutOp = 2;
inline constexpr uint32_t kCommitPutOp = 3;

struct RequestHeader {
  uint64_t request_id = 0;
  uint64_t session_id = 0;
  uint32_t op = 0;
  uint32_t reserved = 0;
};

struct ReplyHeader {
  uint64_t request_id = 0;
  int32_t code = 0;  // absl::StatusCode; the data is the error message unless 0
  uint32_t reserved = 0;
};

struct ReceivedMessage {
  absl::string_view header;
  absl::string_view data;
  // The sender's endpoint, when it asked for replies; else null.
  ucp_ep_h reply_ep = nullptr;
  // The data did not come with the message (rendezvous): `data` is empty
  // and the message is refused, as requests and replies are small.
  bool data_elsewhere = false;
};

class MessageReceiver {
 public:
  virtual ~MessageReceiver() = default;
  virtual void OnMessage(const ReceivedMessage& message) = 0;
};

// Registers `receiver` for message `id` on `worker`.
// REQUIRES: `receiver` outlives the worker.
absl::Status SetMessageHandler(UcxWorker* worker, unsigned id, MessageReceiver* receiver);

// Sends `header` and `payload` on `ep` as message `id` without waiting for
// completion (UCX keeps the bytes until it is done with them); `want_reply`
// gives the receiver this side's endpoint. The converted UCX error when the
// send cannot start.
absl::Status SendMessage(ucp_ep_h ep, unsigned id, absl::string_view header, std::string payload,
                         bool want_reply);

}  // namespace kvtier::ucx

#endif  // KVTIER_CLIENT_UCX_UCX_MESSAGE_H_
