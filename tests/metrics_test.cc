// kvtier-server's /metrics endpoint, scraped over HTTP after a known
// workload through the real client: store figures and the per-RPC counts
// and durations the gRPC interceptor records, error codes included.
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "client/store_client.h"
#include "gtest/gtest.h"
#include "testing/metrics_scrape.h"
#include "testing/server_process.h"

namespace kvtier::testing {
namespace {

TEST(MetricsTest, ScrapeAfterAKnownWorkload) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      {"--data_dir=" + dir.path() + "/data", "--ram_bytes=8388608", "--noucx",
       "--nolocal_lanes", "--metrics_listen=127.0.0.1:0"},
      dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  ASSERT_TRUE((*server)->AwaitStderr("/metrics").ok()) << (*server)->StderrText();
  std::smatch match;
  const std::string log = (*server)->StderrText();
  ASSERT_TRUE(std::regex_search(log, match, std::regex("metrics at http://127.0.0.1:(\\d+)/")));
  int port = 0;
  ASSERT_TRUE(absl::SimpleAtoi(match[1].str(), &port));

  client::ClientOptions options;
  options.use_ucx = false;
  options.local_lanes = false;
  options.max_attempts = 1;
  auto c = *client::StoreClient::Connect((*server)->target(), options);
  const PageLayout layout{.page_size = 4, .n_kv_heads = 1, .head_dim = 8, .dtype = DType::kF32};
  const std::string bytes(layout.PageBytes(), 'm');  // 256 bytes
  std::vector<client::PutPage> pages;
  for (uint64_t n = 1; n <= 3; ++n) {
    pages.push_back({.key = {.hash = {.hi = 7, .lo = n}, .layer = 0},
                     .layout = layout,
                     .data = {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}});
  }
  ASSERT_TRUE(c->BatchPut(pages).ok());
  ASSERT_TRUE(c->BatchGet({pages[0].key, pages[1].key}).ok());
  ASSERT_TRUE(c->Lookup({pages[0].key.hash, pages[1].key.hash, Hash128{.hi = 7, .lo = 99}}).ok());
  // Two refused calls: an unknown pin, a key of the wrong size.
  EXPECT_EQ(c->Unpin(std::string(16, 'p')).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(c->Pin({PageKey{.hash = {.hi = 7, .lo = 42}}}, 1000).status().code(),
            absl::StatusCode::kNotFound);

  const std::string text = ScrapeMetrics(port);
  ASSERT_TRUE(text.starts_with("HTTP/1.1 200")) << text.substr(0, 200);
  EXPECT_EQ(MetricValue(text, "kvtier_rpcs_total{code=\"OK\",method=\"BatchPut\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_rpcs_total{code=\"OK\",method=\"BatchGet\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_rpcs_total{code=\"OK\",method=\"Lookup\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_rpcs_total{code=\"NOT_FOUND\",method=\"Unpin\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_rpcs_total{code=\"NOT_FOUND\",method=\"Pin\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_rpc_duration_seconds_count{method=\"BatchPut\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_rpc_duration_seconds_bucket{method=\"BatchPut\",le=\"+Inf\"}"),
            "1");
  EXPECT_EQ(MetricValue(text, "kvtier_put_pages_total"), "3");
  EXPECT_EQ(MetricValue(text, "kvtier_put_bytes_total{path=\"inline\"}"), "768");
  EXPECT_EQ(MetricValue(text, "kvtier_get_bytes_total{path=\"inline\"}"), "512");
  EXPECT_EQ(MetricValue(text, "kvtier_tier_hits_total{tier=\"ram\"}"), "2");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_prefix_pages_total"), "2");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_chain_pages_total"), "3");
  // A node outside a cluster still reports its one-member view.
  EXPECT_EQ(MetricValue(text, "kvtier_cluster_members{state=\"up\"}"), "1");
  absl::StatusOr<ExitResult> exit = (*server)->Stop();
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->exit_code, 0) << exit->stderr_text;
}

// An address the endpoint cannot use stops the server at start, with the
// reason: never an endpoint on some other interface.
TEST(MetricsTest, AnEndpointThatCannotBeBoundStopsTheServer) {
  TempDir dir;
  const std::pair<const char*, const char*> cases[] = {
      {"999.1.1.1:9464", "must be an IPv4 address"},
      {"metrics.example:9464", "must be an IPv4 address"},
      {"192.0.2.1:9464", "cannot serve metrics"},  // not an address of this host
  };
  for (const auto& [listen, message] : cases) {
    absl::StatusOr<ExitResult> exit = ServerProcess::RunToExit(
        {ServerProcess::BinaryPath(), "--listen=127.0.0.1:0", "--data_dir=" + dir.path() + "/d",
         std::string("--metrics_listen=") + listen},
        dir.path(), absl::Seconds(30));
    ASSERT_TRUE(exit.ok()) << listen << ": " << exit.status();
    EXPECT_EQ(exit->exit_code, 1) << listen;
    EXPECT_NE(exit->stderr_text.find(message), std::string::npos) << exit->stderr_text;
  }
}

}  // namespace
}  // namespace kvtier::testing
