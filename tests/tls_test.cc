// Transport security of the real kvtier-server: TLS and mTLS through gRPC's
// credentials (testing/tls/ holds the test certificates), plaintext only on
// loopback unless --allow_insecure, and clear errors for bad files.
#include <sys/wait.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/store_client.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"

namespace kvtier::testing {
namespace {

using ::testing::HasSubstr;

std::string Tls(const std::string& name) { return absl::StrCat(KVTIER_TLS_DIR, "/", name); }

class TlsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra) {
    std::vector<std::string> args = {"--data_dir=" + dir_.path() + "/data", "--ram_bytes=8388608",
                                     "--disk_bytes=67108864", "--noucx"};
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  // The code of a Stats call through a client with `options` (one attempt).
  absl::StatusCode StatsCode(client::ClientOptions options, const std::string& target = "") {
    options.max_attempts = 1;
    options.deadline_ms = 10'000;
    options.use_ucx = false;
    absl::StatusOr<std::unique_ptr<client::StoreClient>> c =
        client::StoreClient::Connect(target.empty() ? server_->target() : target, options);
    if (!c.ok()) return c.status().code();
    return (*c)->Stats().status().code();
  }

  static client::ClientOptions TrustingClient() {
    client::ClientOptions o;
    o.tls = true;
    o.tls_ca_file = Tls("ca.pem");
    return o;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
};

std::vector<std::string> ServerTls() {
  return {"--tls_cert_file=" + Tls("server.pem"), "--tls_key_file=" + Tls("server.key")};
}

TEST_F(TlsTest, ATlsServerServesTlsClientsOnly) {
  ASSERT_NO_FATAL_FAILURE(Start(ServerTls()));
  EXPECT_EQ(StatsCode(TrustingClient()), absl::StatusCode::kOk);
  // The certificate names localhost and 127.0.0.1: both verify. (The
  // name is given, not resolved: gRPC's resolver, c-ares, leaks a few
  // bytes per lookup that LeakSanitizer reports.)
  client::ClientOptions by_name = TrustingClient();
  by_name.tls_server_name = "localhost";
  EXPECT_EQ(StatsCode(by_name), absl::StatusCode::kOk);
  // Plaintext never gets an answer.
  EXPECT_EQ(StatsCode(client::ClientOptions()), absl::StatusCode::kUnavailable);
  // Nor does a client that does not trust the server's CA.
  client::ClientOptions other_ca = TrustingClient();
  other_ca.tls_ca_file = Tls("rogue_ca.pem");
  EXPECT_EQ(StatsCode(other_ca), absl::StatusCode::kUnavailable);
  // Nor one that expects another name.
  client::ClientOptions other_name = TrustingClient();
  other_name.tls_server_name = "kvtier.example.com";
  EXPECT_EQ(StatsCode(other_name), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, MutualTlsNeedsAClientCertificateFromItsCa) {
  std::vector<std::string> args = ServerTls();
  args.push_back("--tls_client_ca_file=" + Tls("ca.pem"));
  ASSERT_NO_FATAL_FAILURE(Start(args));
  EXPECT_EQ(StatsCode(TrustingClient()), absl::StatusCode::kUnavailable) << "no certificate";
  client::ClientOptions with_cert = TrustingClient();
  with_cert.tls_cert_file = Tls("client.pem");
  with_cert.tls_key_file = Tls("client.key");
  EXPECT_EQ(StatsCode(with_cert), absl::StatusCode::kOk);
  client::ClientOptions rogue = TrustingClient();
  rogue.tls_cert_file = Tls("rogue_client.pem");
  rogue.tls_key_file = Tls("rogue_client.key");
  EXPECT_EQ(StatsCode(rogue), absl::StatusCode::kUnavailable);
}

TEST_F(TlsTest, PagesRoundTripOverTls) {
  ASSERT_NO_FATAL_FAILURE(Start(ServerTls()));
  client::ClientOptions o = TrustingClient();
  o.use_ucx = false;
  absl::StatusOr<std::unique_ptr<client::StoreClient>> c =
      client::StoreClient::Connect(server_->target(), o);
  ASSERT_TRUE(c.ok()) << c.status();
  const PageLayout layout{.page_size = 16, .n_kv_heads = 2, .head_dim = 64, .dtype = DType::kF16};
  std::vector<uint8_t> bytes(layout.PageBytes());
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 7 + 3);
  const PageKey key{.hash = Hash128{.hi = 7, .lo = 42}, .layer = 3};
  ASSERT_TRUE((*c)->BatchPut({client::PutPage{.key = key, .layout = layout, .data = bytes}}).ok());
  absl::StatusOr<std::vector<client::GotPage>> got = (*c)->BatchGet({key});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ((*got)[0].status, v1::PAGE_STATUS_OK);
  EXPECT_EQ((*got)[0].data, std::string(bytes.begin(), bytes.end()));
}

TEST_F(TlsTest, PlaintextBeyondLoopbackNeedsAllowInsecure) {
  absl::StatusOr<ExitResult> refused = ServerProcess::RunToExit(
      {"--listen=0.0.0.0:0", "--data_dir=" + dir_.path() + "/d", "--noucx"}, dir_.path());
  ASSERT_TRUE(refused.ok()) << refused.status();
  EXPECT_EQ(refused->exit_code, 2);
  EXPECT_THAT(refused->stderr_text, HasSubstr("not a loopback address"));
  // Allowed explicitly, it serves (reached here through loopback).
  ASSERT_NO_FATAL_FAILURE(Start({"--listen=0.0.0.0:0", "--allow_insecure"}));
  EXPECT_EQ(StatsCode(client::ClientOptions()), absl::StatusCode::kOk);
}

TEST_F(TlsTest, BadTlsFilesStopTheServerWithAClearError) {
  struct Case {
    std::vector<std::string> flags;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--tls_cert_file=" + Tls("missing.pem"), "--tls_key_file=" + Tls("server.key")},
       "cannot open tls_cert_file"},
      {{"--tls_cert_file=" + Tls("README.md"), "--tls_key_file=" + Tls("server.key")},
       "holds no PEM block"},
      {{"--tls_cert_file=" + Tls("server.pem")}, "tls_cert_file and tls_key_file go together"},
      {{"--tls_client_ca_file=" + Tls("ca.pem")}, "needs tls_cert_file"},
      // A key that is not the certificate's: gRPC cannot listen.
      {{"--tls_cert_file=" + Tls("server.pem"), "--tls_key_file=" + Tls("client.key")},
       "TLS certificate and key do not load or match"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = {"--listen=127.0.0.1:0", "--data_dir=" + dir_.path() + "/d",
                                     "--noucx"};
    args.insert(args.end(), c.flags.begin(), c.flags.end());
    absl::StatusOr<ExitResult> exit = ServerProcess::RunToExit(args, dir_.path());
    ASSERT_TRUE(exit.ok()) << exit.status();
    EXPECT_NE(exit->exit_code, 0) << c.message;
    EXPECT_THAT(exit->stderr_text, HasSubstr(c.message));
  }
}

TEST_F(TlsTest, KvtierctlTakesTheTlsFlags) {
  std::vector<std::string> args = ServerTls();
  args.push_back("--tls_client_ca_file=" + Tls("ca.pem"));
  ASSERT_NO_FATAL_FAILURE(Start(args));
  // kvtierctl's exit status (it has per-RPC deadlines, so it ends).
  auto run = [&](const std::vector<std::string>& flags) {
    std::string cmd = absl::StrCat(KVTIERCTL_PATH, " --target=", server_->target(),
                                   " --deadline_ms=5000");
    for (const std::string& f : flags) absl::StrAppend(&cmd, " '", f, "'");
    absl::StrAppend(&cmd, " stats > /dev/null 2>&1");
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  };
  EXPECT_EQ(run({"--tls", "--tls_ca_file=" + Tls("ca.pem"), "--tls_cert_file=" + Tls("client.pem"),
                 "--tls_key_file=" + Tls("client.key")}),
            0);
  EXPECT_NE(run({}), 0);
  EXPECT_NE(run({"--tls", "--tls_ca_file=" + Tls("ca.pem")}), 0);
}

TEST_F(TlsTest, ClientTlsOptionsAreChecked) {
  client::ClientOptions o;
  o.tls_ca_file = Tls("ca.pem");  // without tls
  EXPECT_EQ(client::StoreClient::Connect("127.0.0.1:1", o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.tls = true;
  o.tls_cert_file = Tls("client.pem");  // without its key
  EXPECT_EQ(client::StoreClient::Connect("127.0.0.1:1", o).status().code(),
            absl::StatusCode::kInvalidArgument);
  o.tls_cert_file.clear();
  o.tls_ca_file = Tls("missing.pem");
  EXPECT_EQ(client::StoreClient::Connect("127.0.0.1:1", o).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvtier::testing
