// ProbeUcxAddress against the real probe program.
#include "kvstore/dataplane/ucx_address_probe.h"

#include <stdlib.h>

#include <string>
#include <thread>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ucx/context.h"
#include "ucx/memory.h"
#include "ucx/worker.h"

namespace kvtier::store {
namespace {

using ::testing::HasSubstr;

constexpr absl::Duration kTimeout = absl::Seconds(20);

class UcxAddressProbeTest : public ::testing::Test {
 protected:
  std::unique_ptr<ucx::UcxContext> context_ = *ucx::UcxContext::Create(ucx::UcxOptions{});
  std::unique_ptr<ucx::UcxWorker> worker_ = *ucx::UcxWorker::Create(*context_);
};

TEST_F(UcxAddressProbeTest, ARealWorkerAddressPasses) {
  EXPECT_TRUE(
      ProbeUcxAddress(KVTIER_UCX_PROBE_PATH, worker_->address(), ucx::UcxOptions{}, kTimeout).ok());
}

TEST_F(UcxAddressProbeTest, BytesThatAbortUcxAreInvalidArgument) {
  const absl::Status status =
      ProbeUcxAddress(KVTIER_UCX_PROBE_PATH, std::string(16, '\xff'), ucx::UcxOptions{}, kTimeout);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("malformed"));
}

TEST_F(UcxAddressProbeTest, AnAddressUcxRefusesIsInvalidArgumentWithItsReason) {
  // A valid header with nothing UCX can reach: refused, not aborted.
  const absl::Status status =
      ProbeUcxAddress(KVTIER_UCX_PROBE_PATH, std::string(1, '\x01'), ucx::UcxOptions{}, kTimeout);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("refused"));
}

// A real worker address on transports the server lacks is refused like any
// address UCX cannot use, with UCX's reason.
TEST_F(UcxAddressProbeTest, AWorkerOnTransportsTheServerLacksIsRefused) {
  if (getenv("UCX_TLS") != nullptr) GTEST_SKIP() << "UCX_TLS overrides the transports";
  ucx::UcxOptions tcp_only;
  tcp_only.transports = "tcp";
  absl::StatusOr<std::unique_ptr<ucx::UcxContext>> context = ucx::UcxContext::Create(tcp_only);
  ASSERT_TRUE(context.ok()) << context.status();
  absl::StatusOr<std::unique_ptr<ucx::UcxWorker>> worker = ucx::UcxWorker::Create(**context);
  ASSERT_TRUE(worker.ok()) << worker.status();
  ucx::UcxOptions server;
  server.transports = "^tcp";
  const absl::Status status =
      ProbeUcxAddress(KVTIER_UCX_PROBE_PATH, (*worker)->address(), server, kTimeout);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_THAT(status.message(), HasSubstr("refused")) << status;
  EXPECT_THAT(status.message(), HasSubstr("unreachable")) << status;
}

TEST_F(UcxAddressProbeTest, RemoteKeysAreProbedOnAnEndpointToTheirWorker) {
  ucx::UcxProgressThread progress(worker_.get());
  absl::StatusOr<std::unique_ptr<ucx::UcxMemory>> region =
      ucx::UcxMemory::Allocate(*context_, 1 << 20);
  ASSERT_TRUE(region.ok()) << region.status();
  EXPECT_TRUE(ProbeUcxRkey(KVTIER_UCX_PROBE_PATH, worker_->address(), (*region)->packed_rkey(),
                           ucx::UcxOptions{}, kTimeout)
                  .ok());
  const std::string good = (*region)->packed_rkey();
  for (const std::string& bad : {std::string(16, '\xff'), good.substr(0, good.size() / 2),
                                 std::string("")}) {
    const absl::Status status =
        ProbeUcxRkey(KVTIER_UCX_PROBE_PATH, worker_->address(), bad, ucx::UcxOptions{}, kTimeout);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << bad.size();
    EXPECT_THAT(status.message(), HasSubstr("region.rkey")) << status;
  }
}

TEST(UcxProbeInputTest, FramesAddressAndKey) {
  EXPECT_EQ(ProbeInput("ab", "xyz"), std::string("\x02\0\0\0abxyz", 9));
  EXPECT_EQ(ProbeInput("", ""), std::string(4, '\0'));
}

TEST_F(UcxAddressProbeTest, NoProbeIsUnavailable) {
  EXPECT_EQ(ProbeUcxAddress("", worker_->address(), ucx::UcxOptions{}, kTimeout).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ(ProbeUcxAddress("/nonexistent/kvtier-ucx-probe", worker_->address(),
                            ucx::UcxOptions{}, kTimeout)
                .code(),
            absl::StatusCode::kUnavailable);
}

TEST_F(UcxAddressProbeTest, ConcurrentProbesAllAnswer) {
  std::vector<std::thread> threads;
  std::vector<absl::Status> results(3 * kMaxConcurrentProbes);
  for (size_t i = 0; i < results.size(); ++i) {
    threads.emplace_back([&, i] {
      results[i] = ProbeUcxAddress(KVTIER_UCX_PROBE_PATH,
                                   i % 2 == 0 ? worker_->address() : std::string(16, '\xff'),
                                   ucx::UcxOptions{}, kTimeout);
    });
  }
  for (std::thread& t : threads) t.join();
  for (size_t i = 0; i < results.size(); ++i) {
    EXPECT_EQ(results[i].code(),
              i % 2 == 0 ? absl::StatusCode::kOk : absl::StatusCode::kInvalidArgument)
        << i << ": " << results[i];
  }
}

}  // namespace
}  // namespace kvtier::store
