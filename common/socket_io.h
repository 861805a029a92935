// Blocking stream-socket I/O with whole messages: exactly n bytes in, all
// bytes out, and the timeouts that bound both. For local lanes' two ends
// (kvstore/dataplane/local_lanes.h, client/local_lane.h).
#ifndef KVTIER_COMMON_SOCKET_IO_H_
#define KVTIER_COMMON_SOCKET_IO_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace kvtier {

// Sets SO_RCVTIMEO or SO_SNDTIMEO (`option`); a zero timeout blocks without
// a bound. UNAVAILABLE when the socket refuses it.
absl::Status SetSocketTimeout(int fd, int option, absl::Duration timeout);

// Reads exactly `bytes` into `out`, retrying after signals. NOT_FOUND when
// the stream ends before the first byte (the peer closed between
// messages), UNAVAILABLE when it ends inside or the socket fails,
// DEADLINE_EXCEEDED past SO_RCVTIMEO. Messages start with `what`.
absl::Status RecvExact(int fd, void* out, size_t bytes, const char* what);

// Writes every byte of `parts` in order (one sendmsg where the socket takes
// it all), without SIGPIPE. UNAVAILABLE when the socket fails,
// DEADLINE_EXCEEDED past SO_SNDTIMEO.
absl::Status SendAll(int fd, absl::Span<const absl::Span<const char>> parts, const char* what);

}  // namespace kvtier

#endif  // KVTIER_COMMON_SOCKET_IO_H_
