// UCX active messages: a handler registered per message id, and a send that
// owns what it sends. What the header and data bytes mean is the caller's
// business (kvtier's own messages: proto/kvtier/v1/data_plane.h).
//
// Thread-safety: SendMessage may be called from any thread. A handler runs
// on whichever thread progresses the worker; it must not progress the worker
// itself, and the message's bytes are valid only during the call.
#ifndef KVTIER_UCX_MESSAGE_H_
#define KVTIER_UCX_MESSAGE_H_

#include <ucp/api/ucp.h>

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "ucx/worker.h"

namespace kvtier::ucx {

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

#endif  // KVTIER_UCX_MESSAGE_H_
