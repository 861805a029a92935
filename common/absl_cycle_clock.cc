#include "common/absl_cycle_clock.h"

#include <cerrno>

#include "absl/base/call_once.h"
#include "absl/base/internal/sysinfo.h"

namespace kvtier {

void InitAbslCycleClock() {
  static absl::once_flag once;
  absl::call_once(once, [] {
    // The measurement is the only way to trigger it; absl has no public
    // entry point. errno is the caller's again afterwards.
    const int saved = errno;
    static_cast<void>(absl::base_internal::NominalCPUFrequency());
    errno = saved;
  });
}

}  // namespace kvtier
