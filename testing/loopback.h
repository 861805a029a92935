// Loopback ports for the suites that run real servers.
#ifndef KVTIER_TESTING_LOOPBACK_H_
#define KVTIER_TESTING_LOOPBACK_H_

#include "absl/status/statusor.h"

namespace kvtier::testing {

// A loopback TCP port nothing listened on a moment ago.
absl::StatusOr<int> PickFreePort();

// Whether a TCP connect to 127.0.0.1:port succeeds.
bool AcceptsLoopbackConnection(int port);

}  // namespace kvtier::testing

#endif  // KVTIER_TESTING_LOOPBACK_H_
