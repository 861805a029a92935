// The real kvtier-server's data plane in its default, untrusting mode: its
// RAM arena is private memory no other process can attach (with
// --trusted_local_clients it is a UCX SysV segment), its UCX uses no
// shared-memory transport, and clients still put and get every page, over
// UCX where a network transport reaches them, through local lanes on the
// server's host, and inline otherwise, never through a mapping of server
// memory.
#include <signal.h>
#include <stdlib.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/store_client.h"
#include "kvstore/access/access_table.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "testing/ucx_test_util.h"

namespace kvtier::testing {
namespace {

std::string MapsOf(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/maps"));
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

class SecureDataPlaneTest : public ::testing::Test {
 protected:
  void TearDown() override { unsetenv("UCX_TLS"); }

  void Start(std::vector<std::string> extra = {},
             client::UcxPutMode mode = client::UcxPutMode::kAuto, bool lanes = true) {
    extra.push_back("--data_dir=" + dir_.path() + "/data");
    extra.push_back("--ram_bytes=8388608");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(extra, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client::ClientOptions options;
    options.deadline_ms = 10'000;
    options.ucx_put_mode = mode;
    options.local_lanes = lanes;
    absl::StatusOr<std::unique_ptr<client::StoreClient>> c =
        client::StoreClient::Connect(server_->target(), options);
    ASSERT_TRUE(c.ok()) << c.status();
    client_ = *std::move(c);
  }

  // Puts and reads back pages of odd sizes, byte-exact.
  void RoundTrip() {
    const OddPages pages = MakeOddPages(6, 3);
    ASSERT_TRUE(client_->BatchPut(pages.puts).ok());
    absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages.keys);
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < pages.keys.size(); ++i) {
      ASSERT_EQ((*got)[i].status, v1::PAGE_STATUS_OK) << i;
      EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
    }
  }

  // A client of the running server acting for `token`; `options` as given
  // otherwise.
  std::unique_ptr<client::StoreClient> ConnectAs(const std::string& token,
                                                 client::ClientOptions options = {}) {
    options.deadline_ms = 10'000;
    options.token = token;
    absl::StatusOr<std::unique_ptr<client::StoreClient>> c =
        client::StoreClient::Connect(server_->target(), options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // An access file admitting acme and, unless `only_acme`, globex.
  std::string WriteAccess(bool only_acme = false) {
    const std::string path = dir_.path() + "/access.txt";
    std::ofstream out(path, std::ios::trunc);
    out << "tenant=acme role=tenant token_sha256=" << access::HashToken(kAcmeToken) << "\n";
    if (!only_acme) {
      out << "tenant=globex role=tenant token_sha256=" << access::HashToken(kGlobexToken)
          << "\n";
    }
    return path;
  }

  static constexpr char kAcmeToken[] = "acme-token-0123456789";
  static constexpr char kGlobexToken[] = "globex-token-0123456789";

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::StoreClient> client_;
};

TEST_F(SecureDataPlaneTest, TheArenaIsASharedSegmentOnlyForTrustedClients) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_NO_FATAL_FAILURE(RoundTrip());
  EXPECT_EQ(MapsOf(server_->pid()).find("SYSV"), std::string::npos);
  // Shared memory reaches no untrusting server: the bytes went through a
  // local lane, memory of the client's.
  client::DataPlaneStats stats = client_->data_plane_stats();
  EXPECT_EQ(stats.ucx_put_pages + stats.ucx_get_pages, 0u);
  EXPECT_EQ(stats.lane_put_pages, 6u);
  EXPECT_EQ(stats.lane_get_pages, 6u);
  // Without lanes, inline.
  client_.reset();
  ASSERT_TRUE(server_->Stop().ok());
  ASSERT_NO_FATAL_FAILURE(Start({}, client::UcxPutMode::kAuto, /*lanes=*/false));
  ASSERT_NO_FATAL_FAILURE(RoundTrip());
  stats = client_->data_plane_stats();
  EXPECT_EQ(stats.ucx_put_pages + stats.ucx_get_pages, 0u);
  EXPECT_EQ(stats.inline_put_pages, 6u);
  EXPECT_EQ(stats.inline_get_pages, 6u);

  client_.reset();
  ASSERT_TRUE(server_->Stop().ok());
  ASSERT_NO_FATAL_FAILURE(Start({"--trusted_local_clients"}));
  ASSERT_NO_FATAL_FAILURE(RoundTrip());
  EXPECT_NE(MapsOf(server_->pid()).find("SYSV"), std::string::npos);
  EXPECT_EQ(client_->data_plane_stats().mapped_get_pages, 6u);
}

TEST_F(SecureDataPlaneTest, OverANetworkTransportTheServerMovesTheBytes) {
  // Read by ucp_config_read in this process and inherited by the server.
  ASSERT_EQ(setenv("UCX_TLS", "tcp", 1), 0);
  for (client::UcxPutMode mode : {client::UcxPutMode::kServerReads, client::UcxPutMode::kTagged}) {
    ASSERT_NO_FATAL_FAILURE(Start({}, mode, /*lanes=*/false));
    ASSERT_NO_FATAL_FAILURE(RoundTrip());
    const client::DataPlaneStats stats = client_->data_plane_stats();
    EXPECT_EQ(stats.sessions_opened, 1u);
    EXPECT_EQ(stats.ucx_put_pages, 6u);  // read or received by the server
    EXPECT_EQ(stats.ucx_get_pages, 6u);  // written or sent by the server
    EXPECT_EQ(stats.mapped_put_pages + stats.mapped_get_pages, 0u);
    EXPECT_EQ(MapsOf(server_->pid()).find("SYSV"), std::string::npos);
    client_.reset();
    ASSERT_TRUE(server_->Stop().ok());
  }
  // Writing into the arena is refused, with a message that says what to do.
  ASSERT_NO_FATAL_FAILURE(Start({}, client::UcxPutMode::kClientWrites, /*lanes=*/false));
  const OddPages pages = MakeOddPages(2, 5);
  const absl::Status refused = client_->BatchPut(pages.puts).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(refused.message().find("trusted_local_clients"), std::string::npos);
}

// Clients of one process share a data plane only when they act for the
// same tenant: a session is its opener's, and a request message acts for
// the session's owner.
TEST_F(SecureDataPlaneTest, ClientsOfTwoTenantsInOneProcessShareNoSession) {
  const std::string access = WriteAccess();
  ASSERT_NO_FATAL_FAILURE(Start({"--trusted_local_clients", "--access_file=" + access}));
  std::unique_ptr<client::StoreClient> acme = ConnectAs(kAcmeToken);
  std::unique_ptr<client::StoreClient> globex = ConnectAs(kGlobexToken);
  const OddPages pages = MakeOddPages(4, 9);
  ASSERT_TRUE(acme->BatchPut(pages.puts).ok());
  absl::StatusOr<std::vector<client::GotPage>> got = globex->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (const client::GotPage& page : *got) EXPECT_EQ(page.status, v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ(acme->data_plane_stats().sessions_opened, 1u);
  EXPECT_EQ(globex->data_plane_stats().sessions_opened, 1u);
  got = acme->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].status, v1::PAGE_STATUS_OK);
  EXPECT_EQ(acme->data_plane_stats().mapped_get_pages, 4u);
}

// A data-plane session is granted to a credential of the access table in
// force when it opened: a reload closes every session. A client still
// admitted opens a new one and goes on; a revoked one gets none.
TEST_F(SecureDataPlaneTest, ReloadingTheAccessFileClosesTheSessionsItGranted) {
  ASSERT_EQ(setenv("UCX_TLS", "tcp", 1), 0);
  const std::string access = WriteAccess();
  ASSERT_NO_FATAL_FAILURE(Start({"--access_file=" + access, "--nolocal_lanes"},
                                client::UcxPutMode::kTagged, /*lanes=*/false));
  client::ClientOptions options;
  options.local_lanes = false;
  options.ucx_put_mode = client::UcxPutMode::kTagged;
  options.ucx_reopen_interval_ms = 1;
  std::unique_ptr<client::StoreClient> acme = ConnectAs(kAcmeToken, options);
  std::unique_ptr<client::StoreClient> globex = ConnectAs(kGlobexToken, options);
  const OddPages pages = MakeOddPages(4, 9);
  ASSERT_TRUE(acme->BatchPut(pages.puts).ok());
  ASSERT_TRUE(globex->BatchPut(pages.puts).ok());
  EXPECT_EQ(acme->data_plane_stats().sessions_opened, 1u);
  EXPECT_EQ(globex->data_plane_stats().sessions_opened, 1u);

  WriteAccess(/*only_acme=*/true);  // globex revoked
  ASSERT_TRUE(server_->Signal(SIGHUP).ok());
  ASSERT_TRUE(server_->AwaitStderr("data_plane_sessions=2").ok()) << server_->StderrText();
  EXPECT_EQ(globex->BatchGet(pages.keys).status().code(), absl::StatusCode::kUnauthenticated);
  // acme's next calls find its session gone and open another.
  for (int round = 0; round < 2; ++round) {
    absl::StatusOr<std::vector<client::GotPage>> got = acme->BatchGet(pages.keys);
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < pages.keys.size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]);
  }
  EXPECT_EQ(acme->data_plane_stats().sessions_opened, 2u);
  EXPECT_EQ(globex->data_plane_stats().sessions_opened, 1u);
}

}  // namespace
}  // namespace kvtier::testing
