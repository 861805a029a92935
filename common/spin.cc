#include "common/spin.h"

#include <poll.h>
#include <sched.h>

#include <algorithm>

#include "absl/time/clock.h"

namespace kvtier {

int SpinGate::HalfTheCores() {
  static const int half = [] {
    cpu_set_t set;
    CPU_ZERO(&set);
    const int cores = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : 1;
    return std::max(1, cores / 2);
  }();
  return half;
}

SpinGate& SpinGate::Waiters() {
  static SpinGate* gate = new SpinGate(HalfTheCores());
  return *gate;
}

bool SpinUntilReadable(int fd, absl::Duration budget) {
  pollfd p{.fd = fd, .events = POLLIN, .revents = 0};
  const absl::Time until = absl::Now() + budget;
  do {
    if (poll(&p, 1, 0) != 0) return true;  // readable, closed or failed: the read will tell
  } while (absl::Now() < until);
  return false;
}

}  // namespace kvtier
