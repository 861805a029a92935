// ProbeUcxAddress, ProbeUcxRkey: whether UCX can use a worker address or a
// packed remote key a client sent, tried in a throwaway process first.
//
// UCX's parsers trust their input: ucp_ep_create reads a packed address
// without a length and asserts on what it does not expect (one byte, 16
// bytes of 0xff or random bytes abort the process), and ucp_ep_rkey_unpack
// crashes on a malformed key (16 bytes of 0xff or random bytes segfault).
// The server therefore never hands a client's address or key to UCX before
// the probe program (kvtier-ucx-probe, ucx_address_probe_main.cc) has used
// the same bytes with the same UCX options and exited cleanly.
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

// The same for a remote key packed by the worker at `address` (which passed
// ProbeUcxAddress): the probe connects to that worker and unpacks `rkey`.
// INVALID_ARGUMENT names the key ("region.rkey") instead of the address.
absl::Status ProbeUcxRkey(const std::string& probe_path, absl::string_view address,
                          absl::string_view rkey, const ucx::UcxOptions& options,
                          absl::Duration timeout);

// The probe's input: a little-endian u32 address length, the address, then
// the remote key (empty: probe the address alone).
std::string ProbeInput(absl::string_view address, absl::string_view rkey);

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_DATAPLANE_UCX_ADDRESS_PROBE_H_
