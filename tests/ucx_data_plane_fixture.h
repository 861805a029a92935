// The fixture of the UCX data-plane suites (ucx_data_plane_test.cc,
// ucx_data_plane_hostile_test.cc): a real kvtier-server per test, over
// shared memory or TCP, with each put mode.
#ifndef KVTIER_TESTS_UCX_DATA_PLANE_FIXTURE_H_
#define KVTIER_TESTS_UCX_DATA_PLANE_FIXTURE_H_

#include <stdlib.h>

#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "client/data_plane.h"
#include "client/store_client.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"

namespace kvtier::testing {

// (transport, put mode): every scenario runs over both transports with the
// staged put path, with tagged messages, and with the automatic choice.
using Param = std::tuple<std::string, client::UcxPutMode>;

class UcxDataPlaneTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    // Read by ucp_config_read in this process and inherited by the server.
    const std::string tls = std::get<0>(GetParam()) == "tcp" ? "tcp" : "posix,sysv,cma";
    ASSERT_EQ(setenv("UCX_TLS", tls.c_str(), 1), 0);
  }
  void TearDown() override { unsetenv("UCX_TLS"); }

  // The suites exercise every path, the arena's own included: clients are
  // trusted with it (secure_data_plane_test.cc covers the default).
  std::unique_ptr<ServerProcess> Start(std::vector<std::string> args = {}) {
    args.push_back("--data_dir=" + dir_.path() + "/data");
    args.push_back("--trusted_local_clients");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir_.path());
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  static std::unique_ptr<client::StoreClient> Connect(const ServerProcess& server,
                                                      bool use_ucx = true) {
    return Connect(server, use_ucx, std::get<1>(GetParam()));
  }
  static std::unique_ptr<client::StoreClient> Connect(const ServerProcess& server, bool use_ucx,
                                                      client::UcxPutMode mode) {
    client::ClientOptions options;
    options.use_ucx = use_ucx;
    options.ucx_put_mode = mode;
    options.deadline_ms = 10'000;
    auto client = client::StoreClient::Connect(server.target(), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(client).value() : nullptr;
  }

  TempDir dir_;
};

}  // namespace kvtier::testing

#endif  // KVTIER_TESTS_UCX_DATA_PLANE_FIXTURE_H_
