// ProbeUcxAddress: whether UCX can create an endpoint from a worker address
// a client sent, tried in a throwaway process first.
//
// UCX's address parser trusts its input: ucp_ep_create reads a packed
// address without a length and asserts on what it does not expect (one
// byte, 16 bytes of 0xff or random bytes abort the process). The server
// therefore never hands a client's address to UCX before the probe program
// (kvtier-ucx-probe, ucx_address_probe_main.cc) has created an endpoint
// from the same bytes with the same UCX options and exited cleanly.
//
// Thread-safety: thread-safe; at most kMaxConcurrentProbes run at once
// (the others wait), so a flood of OpenDataPlane calls cannot fork without
// bound. The first probe makes the process ignore SIGPIPE (a probe that
// dies before reading its input must not kill the server).
#ifndef KVTIER_KVSTORE_DATAPLANE_UCX_ADDRESS_PROBE_H_
#define KVTIER_KVSTORE_DATAPLANE_UCX_ADDRESS_PROBE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "ucx/context.h"

namespace kvtier::store {

inline constexpr int kMaxConcurrentProbes = 4;

// The probe program next to the running executable
// (dirname(/proc/self/exe)/kvtier-ucx-probe), or "" when that cannot be
// read.
std::string DefaultUcxProbePath();

// Runs `probe_path` on `address` with `options`. OK when the probe created
// an endpoint; INVALID_ARGUMENT naming what happened when UCX refused the
// address, the probe crashed or aborted, or it ran past `timeout` (then it
// is killed); UNAVAILABLE when the probe cannot be started.
absl::Status ProbeUcxAddress(const std::string& probe_path, absl::string_view address,
                             const ucx::UcxOptions& options, absl::Duration timeout);

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_DATAPLANE_UCX_ADDRESS_PROBE_H_
