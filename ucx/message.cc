#include "ucx/message.h"

#include <memory>
#include <utility>

#include "ucx/status.h"

namespace kvtier::ucx {
namespace {

ucs_status_t OnMessage(void* arg, const void* header, size_t header_length, void* data,
                       size_t length, const ucp_am_recv_param_t* param) {
  ReceivedMessage message;
  message.header = absl::string_view(static_cast<const char*>(header), header_length);
  message.data_elsewhere = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  if (!message.data_elsewhere) message.data = absl::string_view(static_cast<char*>(data), length);
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0) message.reply_ep = param->reply_ep;
  static_cast<MessageReceiver*>(arg)->OnMessage(message);
  // The data was used during the call (or refused): UCX may release it.
  return UCS_OK;
}

// What an in-flight send keeps alive until UCX is done with it.
struct Outgoing {
  std::string header;
  std::string payload;
};

void OnSent(void* request, ucs_status_t /*status*/, void* user_data) {
  // A failed send surfaces to the waiting side as a missing reply.
  delete static_cast<Outgoing*>(user_data);
  ucp_request_free(request);
}

}  // namespace

absl::Status SetMessageHandler(UcxWorker* worker, unsigned id, MessageReceiver* receiver) {
  ucp_am_handler_param_t param{};
  param.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                     UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
  param.id = id;
  param.flags = UCP_AM_FLAG_WHOLE_MSG;
  param.cb = &OnMessage;
  param.arg = receiver;
  return FromUcsStatus(ucp_worker_set_am_recv_handler(worker->get(), &param),
                       "ucp_worker_set_am_recv_handler");
}

absl::Status SendMessage(ucp_ep_h ep, unsigned id, absl::string_view header, std::string payload,
                         bool want_reply) {
  if (ep == nullptr) return absl::UnavailableError("UCX endpoint closed");
  auto outgoing = std::make_unique<Outgoing>(Outgoing{std::string(header), std::move(payload)});
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                       UCP_OP_ATTR_FIELD_FLAGS;
  param.cb.send = &OnSent;
  param.user_data = outgoing.get();
  param.flags = want_reply ? UCP_AM_SEND_FLAG_REPLY : 0;
  const ucs_status_ptr_t request =
      ucp_am_send_nbx(ep, id, outgoing->header.data(), outgoing->header.size(),
                      outgoing->payload.data(), outgoing->payload.size(), &param);
  if (UCS_PTR_IS_ERR(request)) return FromUcsStatus(UCS_PTR_STATUS(request), "ucp_am_send_nbx");
  // Completed at once: the callback will not run. Otherwise OnSent frees it.
  if (request != nullptr) outgoing.release();
  return absl::OkStatus();
}

}  // namespace kvtier::ucx
