#include "ucx/tag_receive.h"

#include "absl/strings/str_format.h"
#include "ucx/status.h"

namespace kvtier::ucx {

absl::StatusOr<std::unique_ptr<UcxTagReceive>> UcxTagReceive::Post(UcxWorker* worker,
                                                                  void* buffer, uint64_t bytes,
                                                                  uint64_t tag, bool exact) {
  if (buffer == nullptr || bytes == 0) {
    return absl::InvalidArgumentError("tagged receive: empty buffer");
  }
  std::unique_ptr<UcxTagReceive> receive(new UcxTagReceive(worker, bytes, exact));
  ucp_tag_recv_info_t info{};
  ucp_request_param_t param{};
  // Filled when the message had arrived already and the receive completes
  // in place (no request).
  param.op_attr_mask = UCP_OP_ATTR_FIELD_RECV_INFO;
  param.recv_info.tag_info = &info;
  ucs_status_ptr_t request =
      ucp_tag_recv_nbx(worker->get(), buffer, bytes, tag, ~ucp_tag_t{0}, &param);
  if (UCS_PTR_IS_ERR(request)) return FromUcsStatus(UCS_PTR_STATUS(request), "ucp_tag_recv_nbx");
  receive->request_ = request;
  if (request == nullptr) receive->Finish(UCS_OK, info.length);
  return receive;
}

UcxTagReceive::~UcxTagReceive() {
  if (done()) return;
  Cancel();
  while (!done()) worker_->Progress();
}

bool UcxTagReceive::done() {
  if (request_ == nullptr) return true;
  ucp_tag_recv_info_t info{};
  const ucs_status_t status = ucp_tag_recv_request_test(request_, &info);
  if (status == UCS_INPROGRESS) return false;
  ucp_request_free(request_);
  request_ = nullptr;
  Finish(status, info.length);
  return true;
}

void UcxTagReceive::Finish(ucs_status_t status, uint64_t length) {
  if (status == UCS_ERR_CANCELED) {
    status_ = absl::CancelledError("tagged receive cancelled");
  } else if (status != UCS_OK) {
    status_ = FromUcsStatus(status, "ucp_tag_recv_nbx");
  } else if (length > bytes_ || (exact_ && length != bytes_)) {
    status_ = absl::DataLossError(
        absl::StrFormat("tagged receive: %d bytes arrived, %d expected", length, bytes_));
  }
  length_ = length;
}

void UcxTagReceive::Cancel() {
  if (request_ != nullptr) ucp_request_cancel(worker_->get(), request_);
}

}  // namespace kvtier::ucx
