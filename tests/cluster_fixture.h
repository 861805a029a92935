// ClusterTest: a real etcd and kvtier-server nodes on loopback, for the
// cluster suites (cluster_test.cc, cluster_router_test.cc). Skips when
// etcd-server is not installed.
#ifndef KVTIER_TESTS_CLUSTER_FIXTURE_H_
#define KVTIER_TESTS_CLUSTER_FIXTURE_H_

#include <unistd.h>

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/cluster_client.h"
#include "gtest/gtest.h"
#include "testing/etcd_process.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"

namespace kvtier::cluster_testing {

using client::ClusterClient;
using client::ClusterOptions;
using client::StoreClient;
using testing::EtcdProcess;
using testing::PageSet;
using testing::ServerProcess;
using testing::TempDir;

// Short, so that deaths are noticed soon, but long enough that a node slowed
// by sanitizers and a busy host keeps its lease.
constexpr int kLeaseTtlS = 3;

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (access(EtcdProcess::kBinary, X_OK) != 0) {
      GTEST_SKIP() << EtcdProcess::kBinary << " is absent (Debian: etcd-server)";
    }
    absl::StatusOr<std::unique_ptr<EtcdProcess>> etcd = EtcdProcess::Start(dir_.path() + "/etcd");
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
  }

  std::string NodeId(int i) const { return absl::StrCat("node-", i); }

  // Starts node i (again, after a kill: same id and data directory).
  void StartNode(int i) {
    const std::string work = absl::StrCat(dir_.path(), "/", NodeId(i));
    std::filesystem::create_directories(work);
    std::vector<std::string> args = {
        "--data_dir=" + work + "/data", "--ram_bytes=67108864", "--shutdown_demote_ms=10000",
        "--node_id=" + NodeId(i), "--etcd_endpoints=" + etcd_->endpoint(),
        absl::StrCat("--lease_ttl_s=", kLeaseTtlS), "--cluster_name=test"};
    args.insert(args.end(), node_flags_.begin(), node_flags_.end());
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, work);
    ASSERT_TRUE(server.ok()) << server.status();
    ASSERT_TRUE((*server)->AwaitStderr("member up").ok()) << (*server)->StderrText();
    if (nodes_.size() <= static_cast<size_t>(i)) nodes_.resize(i + 1);
    nodes_[i] = *std::move(server);
  }

  void StartNodes(int n) {
    for (int i = 0; i < n; ++i) StartNode(i);
  }

  // Starts n nodes and a client seeded with node `seed` that sees them all.
  std::unique_ptr<ClusterClient> StartCluster(int n, int seed) {
    StartNodes(n);
    std::unique_ptr<ClusterClient> cluster = Connect(seed);
    if (cluster != nullptr) AwaitView(*cluster, n);
    return cluster;
  }

  std::unique_ptr<ClusterClient> Connect(int seed, ClusterOptions options = {}) {
    absl::StatusOr<std::unique_ptr<ClusterClient>> cluster =
        ClusterClient::Connect({nodes_[seed]->target()}, options);
    EXPECT_TRUE(cluster.ok()) << cluster.status();
    return cluster.ok() ? *std::move(cluster) : nullptr;
  }

  // Waits until the client's view shows `count` members up and, when
  // `down` is set, that member down.
  void AwaitView(ClusterClient& cluster, int up_count, const std::string& down = {}) {
    const absl::Time deadline = absl::Now() + absl::Seconds(30);
    while (true) {
      ASSERT_TRUE(cluster.RefreshView().ok());
      const v1::MembersResponse view = cluster.view();
      int up = 0;
      bool down_seen = down.empty();
      for (const v1::Member& m : view.members()) {
        up += m.state() == v1::MEMBER_UP;
        if (m.id() == down && m.state() == v1::MEMBER_DOWN) down_seen = true;
      }
      if (up == up_count && down_seen) return;
      ASSERT_LT(absl::Now(), deadline) << view.DebugString();
      absl::SleepFor(absl::Milliseconds(50));
    }
  }

  // A StoreClient straight to node i.
  std::unique_ptr<StoreClient> Direct(int i) {
    absl::StatusOr<std::unique_ptr<StoreClient>> c =
        StoreClient::Connect(nodes_[i]->target(), client::ClientOptions());
    EXPECT_TRUE(c.ok());
    return c.ok() ? *std::move(c) : nullptr;
  }

  // Whether node i stores `key` (asked directly).
  bool Holds(int i, const PageKey& key) {
    absl::StatusOr<std::vector<client::GotPage>> got = Direct(i)->BatchGet({key});
    return got.ok() && (*got)[0].status == v1::PAGE_STATUS_OK;
  }

  void ExpectAllReadable(ClusterClient& cluster, const PageSet& pages) {
    absl::StatusOr<std::vector<client::GotPage>> got = cluster.BatchGet(pages.keys);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), pages.keys.size());
    for (size_t i = 0; i < got->size(); ++i) {
      ASSERT_EQ((*got)[i].status, v1::PAGE_STATUS_OK) << i;
      ASSERT_EQ((*got)[i].data, pages.bytes[i]) << i;
    }
  }

  // Flags every node started from now on gets besides the fixture's own.
  std::vector<std::string> node_flags_;
  TempDir dir_;
  std::unique_ptr<EtcdProcess> etcd_;
  std::vector<std::unique_ptr<ServerProcess>> nodes_;
};

}  // namespace kvtier::cluster_testing

#endif  // KVTIER_TESTS_CLUSTER_FIXTURE_H_
