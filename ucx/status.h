// The one place where UCX's ucs_status_t becomes an absl::Status.
//
// Mapping: UCS_OK -> OK; NO_MEMORY/NO_RESOURCE/EXCEEDS_LIMIT ->
// RESOURCE_EXHAUSTED; TIMED_OUT/ENDPOINT_TIMEOUT -> DEADLINE_EXCEEDED;
// CANCELED -> CANCELLED; INVALID_PARAM/INVALID_ADDR -> INVALID_ARGUMENT;
// UNSUPPORTED/NOT_IMPLEMENTED -> UNIMPLEMENTED; errors that mean the peer or
// the path is gone (UNREACHABLE, CONNECTION_RESET, NOT_CONNECTED, NO_DEVICE,
// REJECTED, IO_ERROR, ...) -> UNAVAILABLE; anything else -> INTERNAL.
//
// Thread-safety: pure function, thread-safe.
#ifndef KVTIER_UCX_STATUS_H_
#define KVTIER_UCX_STATUS_H_

#include <ucs/type/status.h>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvtier::ucx {

// `what` names the UCX call that failed ("ucp_put_nbx").
absl::Status FromUcsStatus(ucs_status_t status, absl::string_view what);

}  // namespace kvtier::ucx

#endif  // KVTIER_UCX_STATUS_H_
