// The cluster with real processes on loopback: a real etcd and three or
// five kvtier-server nodes registered in it, driven by ClusterClients.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/cluster_client.h"
#include "placement/placement.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "testing/etcd_process.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"
#include "tests/cluster_fixture.h"

namespace kvtier {
namespace {

using client::ClusterClient;
using client::ClusterOptions;
using client::StoreClient;
using testing::EtcdProcess;
using testing::MakePages;
using testing::PageSet;
using testing::PromptChain;
using testing::ServerProcess;
using testing::SmallLayout;
using testing::TempDir;

using cluster_testing::ClusterTest;
using cluster_testing::kLeaseTtlS;

TEST_F(ClusterTest, EveryNodeListsEveryMemberUp) {
  StartNodes(3);
  for (int i = 0; i < 3; ++i) {
    std::unique_ptr<ClusterClient> cluster = Connect(i);
    ASSERT_NE(cluster, nullptr);
    AwaitView(*cluster, 3);
    absl::StatusOr<v1::MembersResponse> view = Direct(i)->Members();
    ASSERT_TRUE(view.ok()) << view.status();
    ASSERT_EQ(view->members_size(), 3);
    EXPECT_EQ(view->self_id(), NodeId(i));
    EXPECT_GT(view->revision(), 0);
    for (int m = 0; m < 3; ++m) {
      EXPECT_EQ(view->members(m).id(), NodeId(m));
      EXPECT_EQ(view->members(m).state(), v1::MEMBER_UP);
      EXPECT_EQ(view->members(m).address(), nodes_[m]->target());
      EXPECT_EQ(view->members(m).ram_capacity_bytes(), uint64_t{64} << 20);
    }
  }
}

TEST_F(ClusterTest, PagesLiveOnTheirOwnersAndAnyNodeFindsThem) {
  StartNodes(3);
  std::unique_ptr<ClusterClient> writer = Connect(0);
  std::unique_ptr<ClusterClient> reader = Connect(2);
  ASSERT_NE(writer, nullptr);
  ASSERT_NE(reader, nullptr);
  AwaitView(*writer, 3);
  AwaitView(*reader, 3);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 48, 1), 2);
  ASSERT_TRUE(writer->BatchPut(pages.ToPut(SmallLayout())).ok());

  // Each page on exactly its two owners by rendezvous hashing.
  const v1::MembersResponse view = writer->view();
  const std::vector<v1::Member> members(view.members().begin(), view.members().end());
  const placement::Placement placement(members);
  std::map<std::string, int> per_node;
  for (const PageKey& key : pages.keys) {
    std::set<std::string> owners;
    for (size_t m : placement.Owners(key.hash, 2)) owners.insert(placement.member(m).id());
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(Holds(i, key), owners.contains(NodeId(i))) << NodeId(i);
      per_node[NodeId(i)] += owners.contains(NodeId(i));
    }
  }
  for (const auto& [id, count] : per_node) EXPECT_GT(count, 0) << id;
  ExpectAllReadable(*reader, pages);

  // One Lookup finds the whole chain and where each page lives.
  const std::vector<Hash128> chain = PromptChain(SmallLayout(), 48, 1);
  absl::StatusOr<client::ClusterLookupReply> found = reader->Lookup(chain, 0, 2);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->prefix_pages, 48u);
  for (size_t p = 0; p < chain.size(); ++p) {
    const std::vector<size_t> owners = placement.Owners(chain[p], 2);
    EXPECT_EQ(found->holders[p], placement.member(owners[0]).id()) << p;
  }
  // A third layer that was never written: no prefix at all.
  found = reader->Lookup(chain, 0, 3);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->prefix_pages, 0u);

  // Page 30 deleted from both owners: the prefix ends there.
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(Direct(i)->Delete({PageKey{.hash = chain[30], .layer = 0}}).ok());
  }
  found = reader->Lookup(chain, 0, 2);
  ASSERT_TRUE(found.ok());
  EXPECT_EQ(found->prefix_pages, 30u);
  EXPECT_EQ(found->holders[30], "");
}

TEST_F(ClusterTest, SigkillOfANodeUnderLoadLosesNoAcknowledgedPage) {
  StartNodes(3);
  std::unique_ptr<ClusterClient> writer = Connect(1);
  std::unique_ptr<ClusterClient> reader = Connect(2);
  ASSERT_NE(writer, nullptr);
  ASSERT_NE(reader, nullptr);
  AwaitView(*writer, 3);
  AwaitView(*reader, 3);

  // Writes and reads go on while node-0 dies; every put that succeeded is
  // remembered, and every read must return exact bytes or a miss.
  absl::Mutex mu;
  std::vector<PageSet> acknowledged;
  std::atomic<bool> stop{false};
  std::atomic<int> wrong_bytes{0};
  std::atomic<int> failed_puts{0};
  std::thread load([&] {
    for (uint32_t prompt = 100; !stop.load(); ++prompt) {
      PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 8, prompt), 2);
      if (!writer->BatchPut(pages.ToPut(SmallLayout())).ok()) {
        ++failed_puts;
        continue;
      }
      absl::StatusOr<std::vector<client::GotPage>> got = reader->BatchGet(pages.keys);
      if (got.ok()) {
        for (size_t i = 0; i < got->size(); ++i) {
          if ((*got)[i].status == v1::PAGE_STATUS_OK && (*got)[i].data != pages.bytes[i]) {
            ++wrong_bytes;
          }
        }
      }
      absl::MutexLock lock(&mu);
      acknowledged.push_back(std::move(pages));
    }
  });
  absl::SleepFor(absl::Milliseconds(500));
  ASSERT_TRUE(nodes_[0]->Signal(SIGKILL).ok());
  // Until the lease expires the view still lists node-0 up: puts and gets
  // fail over past it meanwhile.
  AwaitView(*reader, 2, NodeId(0));
  absl::SleepFor(absl::Milliseconds(500));
  stop = true;
  load.join();

  EXPECT_EQ(wrong_bytes.load(), 0);
  EXPECT_EQ(failed_puts.load(), 0);
  absl::MutexLock lock(&mu);
  ASSERT_GT(acknowledged.size(), 2u);
  for (const PageSet& pages : acknowledged) ExpectAllReadable(*reader, pages);
  // Writes after the death land on the two survivors.
  const PageSet after = MakePages(SmallLayout(), PromptChain(SmallLayout(), 8, 99), 1);
  ASSERT_TRUE(writer->BatchPut(after.ToPut(SmallLayout())).ok());
  for (const PageKey& key : after.keys) {
    EXPECT_TRUE(Holds(1, key));
    EXPECT_TRUE(Holds(2, key));
  }
}

// Owner ids of `key` under the client's current view.
std::set<std::string> OwnersOf(const ClusterClient& cluster, const PageKey& key) {
  const v1::MembersResponse view = cluster.view();
  const std::vector<v1::Member> members(view.members().begin(), view.members().end());
  const placement::Placement placement(members);
  std::set<std::string> owners;
  for (size_t m : placement.Owners(key.hash, 2)) owners.insert(placement.member(m).id());
  return owners;
}

// Pins every key through the cluster client (for 10 min); `by_owner`
// (optional) receives the keys of each owner.
void PinOnOwners(ClusterClient& cluster, const std::vector<PageKey>& keys,
                 std::map<std::string, std::vector<PageKey>>* by_owner = nullptr) {
  absl::StatusOr<client::ClusterPin> pin = cluster.Pin(keys, 600'000);
  ASSERT_TRUE(pin.ok()) << pin.status();
  if (by_owner == nullptr) return;
  for (const PageKey& key : keys) {
    for (const std::string& id : OwnersOf(cluster, key)) (*by_owner)[id].push_back(key);
  }
}

// Pinned pages on node i, from its Stats.
uint64_t PinnedPagesOn(StoreClient& node) {
  absl::StatusOr<v1::StatsResponse> stats = node.Stats();
  EXPECT_TRUE(stats.ok()) << stats.status();
  return stats.ok() ? stats->disk().pinned_pages() : 0;
}

TEST_F(ClusterTest, PinsAndDeletesReachEveryCopy) {
  std::unique_ptr<ClusterClient> cluster = StartCluster(3, 2);
  ASSERT_NE(cluster, nullptr);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 20, 71), 2);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  std::map<std::string, uint64_t> owned;
  for (const PageKey& key : pages.keys) {
    for (const std::string& id : OwnersOf(*cluster, key)) ++owned[id];
  }

  absl::StatusOr<client::ClusterPin> pin = cluster->Pin(pages.keys, 600'000);
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ(pin->pins.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PinnedPagesOn(*Direct(i)), owned[NodeId(i)]) << i;
  EXPECT_EQ(cluster->Delete(pages.keys).status().code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(cluster->Unpin(*pin).ok());
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PinnedPagesOn(*Direct(i)), 0u) << i;
  absl::StatusOr<uint32_t> deleted = cluster->Delete(pages.keys);
  ASSERT_TRUE(deleted.ok()) << deleted.status();
  EXPECT_EQ(*deleted, 2 * pages.keys.size());
  for (const PageKey& key : pages.keys) {
    for (int i = 0; i < 3; ++i) EXPECT_FALSE(Holds(i, key));
  }
  deleted = cluster->Delete(pages.keys);
  ASSERT_TRUE(deleted.ok());
  EXPECT_EQ(*deleted, 0u);
}

TEST_F(ClusterTest, APinOfAMissingKeyPinsNothing) {
  std::unique_ptr<ClusterClient> cluster = StartCluster(3, 0);
  ASSERT_NE(cluster, nullptr);
  const PageSet stored = MakePages(SmallLayout(), PromptChain(SmallLayout(), 10, 72), 1);
  ASSERT_TRUE(cluster->BatchPut(stored.ToPut(SmallLayout())).ok());
  std::vector<PageKey> keys = stored.keys;
  keys.push_back(PageKey{.hash = PromptChain(SmallLayout(), 1, 73)[0], .layer = 0});
  EXPECT_EQ(cluster->Pin(keys, 600'000).status().code(), absl::StatusCode::kNotFound);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(PinnedPagesOn(*Direct(i)), 0u) << i;
  // A page held by only one of its owners is pinned there.
  const PageKey& first = stored.keys[0];
  const std::set<std::string> owners = OwnersOf(*cluster, first);
  const int dropped = owners.contains(NodeId(0)) ? 0 : 1;
  ASSERT_TRUE(Direct(dropped)->Delete({first}).ok());
  absl::StatusOr<client::ClusterPin> pin = cluster->Pin({first}, 600'000);
  ASSERT_TRUE(pin.ok()) << pin.status();
  ASSERT_EQ(pin->pins.size(), 1u);
  EXPECT_NE(pin->pins[0].member_id, NodeId(dropped));
  EXPECT_TRUE(cluster->Unpin(*pin).ok());
}

TEST_F(ClusterTest, ReadRepairGivesADeadMembersPagesTheirSecondCopy) {
  // Unpinned pages move only as they are read.
  node_flags_ = {"--rebalance_bytes_per_s=0"};
  std::unique_ptr<ClusterClient> cluster = StartCluster(3, 1);
  ASSERT_NE(cluster, nullptr);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 60, 21), 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  uint64_t affected = 0;
  for (const PageKey& key : pages.keys) affected += OwnersOf(*cluster, key).contains(NodeId(0));
  ASSERT_GT(affected, 0u);

  ASSERT_TRUE(nodes_[0]->Signal(SIGKILL).ok());
  AwaitView(*cluster, 2, NodeId(0));
  ExpectAllReadable(*cluster, pages);
  EXPECT_EQ(cluster->stats().repaired_pages, affected);
  EXPECT_EQ(cluster->stats().repair_failures, 0u);
  for (const PageKey& key : pages.keys) {
    EXPECT_TRUE(Holds(1, key));
    EXPECT_TRUE(Holds(2, key));
  }
  // Nothing is left to repair.
  ExpectAllReadable(*cluster, pages);
  EXPECT_EQ(cluster->stats().repaired_pages, affected);
}

TEST_F(ClusterTest, AJoiningMemberTakesItsShareAsPagesAreRead) {
  // Unpinned pages move only as they are read.
  node_flags_ = {"--rebalance_bytes_per_s=0"};
  StartNode(0);
  StartNode(1);
  ClusterOptions no_repair;
  no_repair.read_repair = false;
  std::unique_ptr<ClusterClient> cluster = Connect(0);
  std::unique_ptr<ClusterClient> plain = Connect(0, no_repair);
  ASSERT_NE(cluster, nullptr);
  ASSERT_NE(plain, nullptr);
  AwaitView(*cluster, 2);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 60, 22), 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());

  StartNode(2);
  AwaitView(*cluster, 3);
  AwaitView(*plain, 3);
  // Without read repair every page is still found (on its former owners)
  // and the new member gets nothing.
  ExpectAllReadable(*plain, pages);
  EXPECT_EQ(plain->stats().repaired_pages, 0u);
  for (const PageKey& key : pages.keys) EXPECT_FALSE(Holds(2, key));

  ExpectAllReadable(*cluster, pages);
  uint64_t share = 0;
  for (const PageKey& key : pages.keys) {
    const bool owned = OwnersOf(*cluster, key).contains(NodeId(2));
    share += owned;
    EXPECT_EQ(Holds(2, key), owned);
  }
  EXPECT_GT(share, 0u);
  EXPECT_EQ(cluster->stats().repaired_pages, share);
}

// With the default background pass, a joiner gets its share of unpinned
// pages from their former owners without a single read.
TEST_F(ClusterTest, AJoiningMemberGetsItsShareOfUnpinnedPagesUnread) {
  StartNode(0);
  StartNode(1);
  ClusterOptions no_repair;
  no_repair.read_repair = false;
  std::unique_ptr<ClusterClient> cluster = Connect(0, no_repair);
  ASSERT_NE(cluster, nullptr);
  AwaitView(*cluster, 2);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 60, 23), 2);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());

  StartNode(2);
  AwaitView(*cluster, 3);
  std::unique_ptr<StoreClient> joiner = Direct(2);
  std::vector<PageKey> share;
  for (const PageKey& key : pages.keys) {
    if (OwnersOf(*cluster, key).contains(NodeId(2))) share.push_back(key);
  }
  ASSERT_FALSE(share.empty());
  // Lookups (no reads) until the joiner holds its whole share.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  size_t held = 0;
  while (absl::Now() < deadline) {
    held = 0;
    for (const PageKey& key : share) {
      absl::StatusOr<client::LookupReply> found = joiner->Lookup({key.hash}, key.layer, 1);
      ASSERT_TRUE(found.ok()) << found.status();
      held += found->prefix_pages;
    }
    if (held == share.size()) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(held, share.size());
  // Only its share: nothing it does not own was copied to it.
  for (const PageKey& key : pages.keys) {
    if (!OwnersOf(*cluster, key).contains(NodeId(2))) {
      EXPECT_FALSE(Holds(2, key));
    }
  }
  EXPECT_EQ(cluster->stats().repaired_pages, 0u);
  ExpectAllReadable(*cluster, pages);
}

TEST_F(ClusterTest, ADeadMembersPinnedPagesGetTheirSecondCopyBackUnread) {
  // Without the background pass, only pinned pages move unread.
  node_flags_ = {"--rebalance_bytes_per_s=0"};
  std::unique_ptr<ClusterClient> cluster = StartCluster(3, 1);
  ASSERT_NE(cluster, nullptr);
  const PageSet pinned = MakePages(SmallLayout(), PromptChain(SmallLayout(), 40, 31), 1);
  const PageSet unpinned = MakePages(SmallLayout(), PromptChain(SmallLayout(), 40, 32), 1);
  ASSERT_TRUE(cluster->BatchPut(pinned.ToPut(SmallLayout())).ok());
  ASSERT_TRUE(cluster->BatchPut(unpinned.ToPut(SmallLayout())).ok());
  ASSERT_NO_FATAL_FAILURE(PinOnOwners(*cluster, pinned.keys));
  std::vector<PageKey> unpinned_moved;  // unpinned pages node-0 owned
  for (const PageKey& key : unpinned.keys) {
    if (OwnersOf(*cluster, key).contains(NodeId(0))) unpinned_moved.push_back(key);
  }
  ASSERT_FALSE(unpinned_moved.empty());

  ASSERT_TRUE(nodes_[0]->Signal(SIGKILL).ok());
  AwaitView(*cluster, 2, NodeId(0));
  // No client reads anything: the survivors copy the pinned pages between
  // them, pinned.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  for (int node : {1, 2}) {
    while (true) {
      absl::StatusOr<v1::StatsResponse> stats = Direct(node)->Stats();
      ASSERT_TRUE(stats.ok());
      if (stats->disk().pinned_pages() == pinned.keys.size()) break;
      ASSERT_LT(absl::Now(), deadline) << NodeId(node) << " " << stats->DebugString();
      absl::SleepFor(absl::Milliseconds(50));
    }
    for (const PageKey& key : pinned.keys) EXPECT_TRUE(Holds(node, key));
  }
  // Unpinned pages wait for a read (read repair) to move.
  int moved = 0;
  for (const PageKey& key : unpinned_moved) moved += Holds(1, key) && Holds(2, key);
  EXPECT_EQ(moved, 0);
  EXPECT_THAT(nodes_[1]->StderrText() + nodes_[2]->StderrText(),
              ::testing::HasSubstr("replication round"));
}

TEST_F(ClusterTest, ADrainingMemberHandsEveryPageOnBeforeItStops) {
  std::unique_ptr<ClusterClient> cluster = StartCluster(3, 1);
  ASSERT_NE(cluster, nullptr);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 60, 41), 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  size_t owned_by_0 = 0;
  for (const PageKey& key : pages.keys) owned_by_0 += OwnersOf(*cluster, key).contains(NodeId(0));
  ASSERT_GT(owned_by_0, 0u);

  absl::StatusOr<testing::ExitResult> exit = nodes_[0]->Stop();
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->exit_code, 0);
  EXPECT_THAT(exit->stderr_text,
              ::testing::HasSubstr(absl::StrCat("drain done pages_copied=", owned_by_0,
                                                " copy_failures=0")));
  // Every page is on both survivors before any read.
  for (const PageKey& key : pages.keys) {
    EXPECT_TRUE(Holds(1, key));
    EXPECT_TRUE(Holds(2, key));
  }
  AwaitView(*cluster, 2);
  ExpectAllReadable(*cluster, pages);
  EXPECT_EQ(cluster->stats().repaired_pages, 0u);
}

TEST_F(ClusterTest, AFrozenMemberIsDeclaredDownItsPinnedPagesCopiedAndItReturns) {
  std::unique_ptr<ClusterClient> cluster = StartCluster(3, 1);
  ASSERT_NE(cluster, nullptr);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 30, 51), 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  std::map<std::string, std::vector<PageKey>> by_owner;
  ASSERT_NO_FATAL_FAILURE(PinOnOwners(*cluster, pages.keys, &by_owner));

  // Frozen, not dead: its process holds its pages, but its lease lapses.
  ASSERT_TRUE(nodes_[0]->Signal(SIGSTOP).ok());
  AwaitView(*cluster, 2, NodeId(0));
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  for (int node : {1, 2}) {
    while ((*Direct(node)->Stats()).disk().pinned_pages() != pages.keys.size()) {
      ASSERT_LT(absl::Now(), deadline) << NodeId(node);
      absl::SleepFor(absl::Milliseconds(50));
    }
  }
  ExpectAllReadable(*cluster, pages);
  // Thawed, it registers again and is up, with its pages.
  ASSERT_TRUE(nodes_[0]->Signal(SIGCONT).ok());
  AwaitView(*cluster, 3);
  for (const PageKey& key : by_owner[NodeId(0)]) EXPECT_TRUE(Holds(0, key));
  ExpectAllReadable(*cluster, pages);
}

TEST_F(ClusterTest, LookupsDuringAJoinFindTheWholePrefix) {
  StartNode(0);
  StartNode(1);
  std::unique_ptr<ClusterClient> cluster = Connect(0);
  ASSERT_NE(cluster, nullptr);
  AwaitView(*cluster, 2);
  const std::vector<Hash128> chain = PromptChain(SmallLayout(), 64, 61);
  const PageSet pages = MakePages(SmallLayout(), chain, 2);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());

  std::atomic<bool> stop{false};
  std::atomic<int> lookups{0};
  std::atomic<int> short_prefixes{0};
  std::atomic<int> errors{0};
  std::thread looker([&] {
    while (!stop.load()) {
      absl::StatusOr<client::ClusterLookupReply> found = cluster->Lookup(chain, 0, 2);
      ++lookups;
      if (!found.ok()) {
        ++errors;
      } else if (found->prefix_pages != chain.size()) {
        ++short_prefixes;
      }
    }
  });
  StartNode(2);
  AwaitView(*cluster, 3);
  absl::SleepFor(absl::Milliseconds(300));
  stop = true;
  looker.join();
  EXPECT_GT(lookups.load(), 0);
  EXPECT_EQ(errors.load(), 0);
  EXPECT_EQ(short_prefixes.load(), 0);
}

TEST_F(ClusterTest, ARestartedNodeRejoinsWithItsPages) {
  std::unique_ptr<ClusterClient> cluster = StartCluster(3, 0);
  ASSERT_NE(cluster, nullptr);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 32, 7), 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  std::vector<PageKey> on_node2;
  for (const PageKey& key : pages.keys) {
    if (Holds(2, key)) on_node2.push_back(key);
  }
  ASSERT_FALSE(on_node2.empty());

  // A graceful stop: the RAM tier is written to disk first.
  ASSERT_TRUE(nodes_[2]->Stop().ok());
  AwaitView(*cluster, 2, NodeId(2));
  StartNode(2);
  AwaitView(*cluster, 3);
  for (const PageKey& key : on_node2) EXPECT_TRUE(Holds(2, key));
  ExpectAllReadable(*cluster, pages);
}

TEST_F(ClusterTest, MembershipSurvivesAnEtcdRestart) {
  std::unique_ptr<ClusterClient> cluster = StartCluster(3, 0);
  ASSERT_NE(cluster, nullptr);
  etcd_->Kill();
  // Without etcd the nodes keep their views and keep serving.
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 8, 3), 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  ASSERT_TRUE(etcd_->Restart().ok());
  // Back with etcd: all three still members, and a change is seen again.
  AwaitView(*cluster, 3);
  ASSERT_TRUE(nodes_[1]->Signal(SIGKILL).ok());
  AwaitView(*cluster, 2, NodeId(1));
  ExpectAllReadable(*cluster, pages);
}

TEST_F(ClusterTest, FiveNodesSpreadPagesAndSurviveOneDeath) {
  std::unique_ptr<ClusterClient> cluster = StartCluster(5, 4);
  ASSERT_NE(cluster, nullptr);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 100, 11), 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  int copies = 0;
  for (const PageKey& key : pages.keys) {
    for (int i = 0; i < 5; ++i) copies += Holds(i, key);
  }
  EXPECT_EQ(copies, 200);
  // A stale view: node-3 dies, the client reads before it hears of it.
  ASSERT_TRUE(nodes_[3]->Signal(SIGKILL).ok());
  ExpectAllReadable(*cluster, pages);
}

TEST_F(ClusterTest, BadClusterFlagsAreRefused) {
  absl::StatusOr<testing::ExitResult> exit = ServerProcess::RunToExit(
      {"--listen=127.0.0.1:0", "--etcd_endpoints=" + etcd_->endpoint(), "--data_dir=" +
       dir_.path() + "/bad"},
      dir_.path());
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->exit_code, 2);
  EXPECT_THAT(exit->stderr_text, ::testing::HasSubstr("node_id: required"));
  exit = ServerProcess::RunToExit({"--listen=127.0.0.1:0", "--node_id=a",
                                   "--static_members=b=127.0.0.1:1", "--data_dir=" +
                                   dir_.path() + "/bad"},
                                  dir_.path());
  ASSERT_TRUE(exit.ok());
  EXPECT_EQ(exit->exit_code, 2);
  EXPECT_THAT(exit->stderr_text, ::testing::HasSubstr("is not listed"));
}

TEST(ClusterClientOptionsTest, BadOptionsAreRefused) {
  ClusterOptions options;
  options.write_quorum = 3;
  EXPECT_TRUE(absl::IsInvalidArgument(ClusterClient::Connect({"127.0.0.1:1"}, options).status()));
  options = ClusterOptions();
  options.replicas = 0;
  EXPECT_TRUE(absl::IsInvalidArgument(ClusterClient::Connect({"127.0.0.1:1"}, options).status()));
  EXPECT_TRUE(absl::IsInvalidArgument(ClusterClient::Connect({}, ClusterOptions()).status()));
  // Nobody answers at a closed port.
  EXPECT_TRUE(absl::IsUnavailable(
      ClusterClient::Connect({absl::StrCat("127.0.0.1:", testing::PickFreePort().value_or(1))},
                             ClusterOptions())
          .status()));
}

}  // namespace
}  // namespace kvtier
