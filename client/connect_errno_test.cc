// StoreClient::Connect runs absl's one-time cycle-clock measurement before
// any connect, so that it cannot leave errno at ENOENT inside gRPC's connect
// (common/absl_cycle_clock.h). Its own binary: the measurement happens once
// per process, and this test must be the first to ask for it.
#include <cerrno>
#include <filesystem>

#include "absl/base/internal/sysinfo.h"
#include "client/store_client.h"
#include "gtest/gtest.h"

namespace kvtier::client {
namespace {

TEST(ConnectErrnoTest, ConnectMeasuresTheCycleClockFirst) {
  if (std::filesystem::exists("/sys/devices/system/cpu/cpu0/tsc_freq_khz")) {
    GTEST_SKIP() << "the kernel gives the TSC frequency: the measurement sets no errno here";
  }
  // Connect does not dial; no server is needed.
  absl::StatusOr<std::unique_ptr<StoreClient>> client =
      StoreClient::Connect("127.0.0.1:1", ClientOptions());
  ASSERT_TRUE(client.ok()) << client.status();
  // What gRPC's first contended mutex would run between connect() and its
  // read of errno: after Connect, a no-op that leaves errno alone.
  errno = EINPROGRESS;
  static_cast<void>(absl::base_internal::NominalCPUFrequency());
  EXPECT_EQ(errno, EINPROGRESS) << "absl's measurement ran after Connect and set errno";
}

}  // namespace
}  // namespace kvtier::client
