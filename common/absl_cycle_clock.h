// Runs absl's one-time cycle-clock measurement up front, so that it cannot
// clobber errno inside another library's system call sequence.
//
// The first absl::Mutex wait that blocks behind another thread measures the
// CPU's cycle-clock frequency (absl::base_internal::NominalCPUFrequency).
// Where the kernel offers no /sys/devices/system/cpu/cpu0/tsc_freq_khz it
// opens that file, fails, measures instead, and leaves errno at ENOENT.
// gRPC 1.51 (Debian bookworm) reads connect()'s errno only after taking its
// own mutexes (fixed upstream in gRPC 1.61, "Defend against connect errno
// being overwritten"), so when that measurement lands in between, a connect
// in progress is reported as "UNKNOWN: ipv4:HOST:PORT: No such file or
// directory" and the channel backs off for a second: a client's first
// connect failed at random while its process was busy.
//
// Call InitAbslCycleClock() before the first gRPC channel of a process
// connects (StoreClient::Connect does). Thread-safe; after the first call
// it costs an atomic load.
#ifndef KVTIER_COMMON_ABSL_CYCLE_CLOCK_H_
#define KVTIER_COMMON_ABSL_CYCLE_CLOCK_H_

namespace kvtier {

void InitAbslCycleClock();

}  // namespace kvtier

#endif  // KVTIER_COMMON_ABSL_CYCLE_CLOCK_H_
