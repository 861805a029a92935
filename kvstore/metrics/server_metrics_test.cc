// ServerMetrics over a real store and service after a known workload: the
// exact values of the store's, the service's and the lookups' families,
// and an exposer that serves them over HTTP.
#include "kvstore/metrics/server_metrics.h"

#include <gtest/gtest.h>

#include <fstream>
#include <set>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/checksum.h"
#include "kvstore/access/access_control.h"
#include "kvstore/access/access_table.h"
#include "kvtier/v1/convert.h"
#include "testing/metrics_scrape.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using ::kvtier::testing::MetricValue;
using testing::TempDir;

PageLayout Layout() {  // 16 tokens x 1 head x 64 dims x f16 x (K, V) = 4096 bytes
  return PageLayout{.page_size = 16, .n_kv_heads = 1, .head_dim = 64, .dtype = DType::kF16};
}

Hash128 H(uint64_t n) { return Hash128{.hi = 0x3e7, .lo = n}; }

v1::BatchPutRequest PutRequest(uint64_t first, uint64_t last) {
  v1::BatchPutRequest request;
  for (uint64_t n = first; n <= last; ++n) {
    v1::PutPage* page = request.add_pages();
    v1::KeyToProto(PageKey{.hash = H(n), .layer = 0}, page->mutable_key());
    v1::LayoutToProto(Layout(), page->mutable_layout());
    page->set_inline_data(std::string(Layout().PageBytes(), static_cast<char>(n)));
    page->set_checksum(PageChecksum(page->inline_data().data(), page->inline_data().size()));
  }
  return request;
}

class ServerMetricsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StoreOptions options;
    options.data_dir = dir_.path();
    options.ram.capacity_bytes = 16 << 20;
    store_ = *Store::Open(options);
    service_ = std::make_unique<KvStoreService>(store_.get(),
                                                ServiceLimits::FromStoreOptions(options));
  }

  // Puts pages 1..4, gets 1, 2 and a missing key, looks up chains with
  // stored prefixes of 4, 0 and 2 pages.
  void Workload() {
    v1::BatchPutResponse put;
    ASSERT_TRUE(service_->DoBatchPut(kAnon, PutRequest(1, 4), &put).ok());
    ASSERT_TRUE(service_->DoBatchPut(kAnon, PutRequest(4, 4), &put).ok());  // a duplicate
    v1::BatchGetRequest get;
    for (uint64_t n : {1, 2, 99}) {
      v1::KeyToProto(PageKey{.hash = H(n), .layer = 0}, get.add_keys());
    }
    v1::BatchGetResponse got;
    ASSERT_TRUE(service_->DoBatchGet(kAnon, get, &got).ok());
    for (const std::vector<uint64_t>& chain :
         {std::vector<uint64_t>{1, 2, 3, 4, 5}, std::vector<uint64_t>{7}, {1, 2, 9}}) {
      v1::LookupRequest lookup;
      for (uint64_t n : chain) lookup.add_chain(H(n).CanonicalString());
      v1::LookupResponse found;
      ASSERT_TRUE(service_->DoLookup(kAnon, lookup, &found).ok());
    }
  }

  const Caller kAnon = Caller::Anonymous();
  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<KvStoreService> service_;
};

TEST_F(ServerMetricsTest, AKnownWorkloadGivesExactValues) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Start("");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  EXPECT_EQ((*metrics)->port(), 0);
  (*metrics)->SetStore(store_.get(), service_.get(), nullptr);
  ASSERT_NO_FATAL_FAILURE(Workload());
  const std::string text = (*metrics)->Render();

  EXPECT_EQ(MetricValue(text, "kvtier_tier_pages{tier=\"ram\"}"), "4");
  EXPECT_EQ(MetricValue(text, "kvtier_tier_pages{tier=\"disk\"}"), "0");
  EXPECT_EQ(MetricValue(text, "kvtier_tier_hits_total{tier=\"ram\"}"), "2");
  EXPECT_EQ(MetricValue(text, "kvtier_tier_in_bytes_total{tier=\"ram\"}"), "16384");
  EXPECT_EQ(MetricValue(text, "kvtier_tier_out_bytes_total{tier=\"ram\"}"), "8192");
  EXPECT_EQ(MetricValue(text, "kvtier_get_misses_total"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_put_pages_total"), "4");
  EXPECT_EQ(MetricValue(text, "kvtier_put_duplicate_pages_total"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_tier_capacity_bytes{tier=\"ram\"}"), "16777216");
  // Both puts' bytes came inline (the duplicate's too); both got pages went
  // back inline.
  EXPECT_EQ(MetricValue(text, "kvtier_put_bytes_total{path=\"inline\"}"), "20480");
  EXPECT_EQ(MetricValue(text, "kvtier_put_bytes_total{path=\"lane\"}"), "0");
  EXPECT_EQ(MetricValue(text, "kvtier_get_bytes_total{path=\"inline\"}"), "8192");
  EXPECT_EQ(MetricValue(text, "kvtier_tenant_pages{tenant=\"anonymous\",tier=\"ram\"}"), "4");
  // Lookups: prefixes of 4, 0 and 2 pages of chains of 5, 1 and 3.
  EXPECT_EQ(MetricValue(text, "kvtier_lookups_total"), "3");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_chain_pages_total"), "9");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_prefix_pages_total"), "6");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_prefix_pages_bucket{le=\"0\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_prefix_pages_bucket{le=\"1\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_prefix_pages_bucket{le=\"3\"}"), "2");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_prefix_pages_bucket{le=\"7\"}"), "3");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_prefix_pages_bucket{le=\"+Inf\"}"), "3");
  EXPECT_EQ(MetricValue(text, "kvtier_lookup_prefix_pages_sum"), "6");
  EXPECT_EQ(MetricValue(text, "kvtier_event_watchers"), "0");
  // No cluster was given: no cluster families.
  EXPECT_EQ(text.find("kvtier_cluster_members"), std::string::npos);
}

// Cluster members by state, and the replicator's counters.
TEST_F(ServerMetricsTest, ClusterFamiliesCountMembersByState) {
  std::vector<v1::Member> members;
  for (const char* id : {"a", "b", "c"}) {
    v1::Member m;
    m.set_id(id);
    m.set_address(absl::StrCat(id, ":1"));
    m.set_state(v1::MEMBER_UP);
    members.push_back(m);
  }
  absl::StatusOr<std::unique_ptr<cluster::Membership>> membership =
      cluster::StartStaticMembership(members, "b");
  ASSERT_TRUE(membership.ok()) << membership.status();
  ASSERT_TRUE((*membership)->SetSelfState(v1::MEMBER_DRAINING).ok());
  cluster::ReplicatorOptions options;
  options.send = [](const v1::Member&, const v1::ReplicaPutRequest&) { return absl::OkStatus(); };
  cluster::Replicator replicator(store_.get(), "b", (*membership)->View(), options);
  std::unique_ptr<ServerMetrics> metrics = *ServerMetrics::Start("");
  metrics->SetCluster(membership->get(), &replicator);
  const std::string text = metrics->Render();
  EXPECT_EQ(MetricValue(text, "kvtier_cluster_members{state=\"up\"}"), "2");
  EXPECT_EQ(MetricValue(text, "kvtier_cluster_members{state=\"draining\"}"), "1");
  EXPECT_EQ(MetricValue(text, "kvtier_cluster_members{state=\"down\"}"), "0");
  EXPECT_EQ(MetricValue(text, "kvtier_replication_pages_copied_total"), "0");
  EXPECT_EQ(MetricValue(text, "kvtier_replication_copy_failures_total"), "0");
  // No store was given: no store families.
  EXPECT_EQ(text.find("kvtier_tier_pages"), std::string::npos);
}

// Every family named in FamilyNames() is one the server can export, and
// every family exported is named there (the dashboard and alert checks
// rely on the list).
TEST_F(ServerMetricsTest, FamilyNamesCoverEveryExportedFamily) {
  std::unique_ptr<ServerMetrics> metrics = *ServerMetrics::Start("");
  metrics->SetStore(store_.get(), service_.get(), nullptr);
  ASSERT_NO_FATAL_FAILURE(Workload());
  const std::vector<std::string> names = ServerMetrics::FamilyNames();
  const std::set<std::string> known(names.begin(), names.end());
  EXPECT_EQ(known.size(), names.size());
  const std::vector<std::string> lines = absl::StrSplit(metrics->Render(), '\n');
  for (const std::string& line : lines) {
    if (!line.starts_with("# TYPE ")) continue;
    const std::vector<std::string> parts = absl::StrSplit(line, ' ');
    ASSERT_GE(parts.size(), 3u);
    EXPECT_TRUE(known.contains(parts[2])) << parts[2];
  }
}

// The exposer answers GET /metrics on its own port with the same text.
TEST_F(ServerMetricsTest, TheExposerServesMetricsOverHttp) {
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics = ServerMetrics::Start("127.0.0.1:0");
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  ASSERT_GT((*metrics)->port(), 0);
  (*metrics)->SetStore(store_.get(), service_.get(), nullptr);
  ASSERT_NO_FATAL_FAILURE(Workload());

  const std::string reply = ::kvtier::testing::ScrapeMetrics((*metrics)->port());
  EXPECT_TRUE(reply.starts_with("HTTP/1.1 200")) << reply.substr(0, 100);
  EXPECT_NE(reply.find("\nkvtier_put_pages_total 4\n"), std::string::npos);

  EXPECT_EQ(ServerMetrics::Start("nonsense").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ServerMetrics::Start("300.1.1.1:0").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ServerMetrics::Start("host.example:0").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ServerMetrics::Start(absl::StrCat("127.0.0.1:", (*metrics)->port())).status().code(),
            absl::StatusCode::kUnavailable);
}

// With an access file, a scrape needs a metrics credential of the current
// table: its tenant name and token as HTTP Basic user and password.
TEST_F(ServerMetricsTest, WithAnAccessFileOnlyAMetricsCredentialScrapes) {
  constexpr char kMetricsToken[] = "prometheus-scrape-token-0123";
  constexpr char kAdminToken[] = "ops-admin-token-ABCDEFGH0123";
  const std::string path = dir_.path() + "/access.txt";
  const std::string admin_line =
      absl::StrCat("tenant=ops role=admin token_sha256=", access::HashToken(kAdminToken), "\n");
  const std::string metrics_line = absl::StrCat(
      "tenant=prom role=metrics token_sha256=", access::HashToken(kMetricsToken), "\n");
  std::ofstream(path) << admin_line << metrics_line;
  absl::StatusOr<std::unique_ptr<access::AccessControl>> access =
      access::AccessControl::Open(path);
  ASSERT_TRUE(access.ok()) << access.status();
  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics =
      ServerMetrics::Start("127.0.0.1:0", access->get());
  ASSERT_TRUE(metrics.ok()) << metrics.status();
  (*metrics)->SetStore(store_.get(), service_.get(), access->get());
  ASSERT_NO_FATAL_FAILURE(Workload());
  const int port = (*metrics)->port();
  auto status_line = [&](const std::string& credentials) {
    const std::string reply = ::kvtier::testing::ScrapeMetrics(port, credentials);
    return reply.substr(0, reply.find('\r'));
  };
  EXPECT_EQ(status_line(""), "HTTP/1.1 401 Unauthorized");
  EXPECT_EQ(status_line(absl::StrCat("ops:", kAdminToken)), "HTTP/1.1 401 Unauthorized");
  EXPECT_EQ(status_line(absl::StrCat("ops:", kMetricsToken)), "HTTP/1.1 401 Unauthorized");
  EXPECT_EQ(status_line("prom:prometheus-scrape-token-0124"), "HTTP/1.1 401 Unauthorized");
  const std::string reply =
      ::kvtier::testing::ScrapeMetrics(port, absl::StrCat("prom:", kMetricsToken));
  EXPECT_TRUE(reply.starts_with("HTTP/1.1 200")) << reply.substr(0, 100);
  EXPECT_NE(reply.find("\nkvtier_put_pages_total 4\n"), std::string::npos);

  // A reload that drops the line revokes it at the next scrape.
  std::ofstream(path, std::ios::trunc) << admin_line;
  ASSERT_TRUE((*access)->Reload().ok());
  EXPECT_EQ(status_line(absl::StrCat("prom:", kMetricsToken)), "HTTP/1.1 401 Unauthorized");
}

}  // namespace
}  // namespace kvtier::store
