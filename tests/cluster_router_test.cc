// PrefixRouter over a real cluster: it learns from every member's cache
// event stream where each prefix lives, follows members that die and come
// back, and agrees with placement.
#include <signal.h>

#include <map>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "client/prefix_router.h"
#include "placement/placement.h"
#include "tests/cluster_fixture.h"

namespace kvtier {
namespace {

using client::NodePrefix;
using client::PrefixRouter;
using client::PrefixRouterOptions;
using cluster_testing::ClusterTest;
using testing::MakePages;
using testing::PageSet;
using testing::PromptChain;
using testing::SmallLayout;

// What Locate should answer once every event arrived: for each member of
// `view` not in `excluded`, the leading chain pages whose R owners include
// it; longest first, ties by id.
std::vector<NodePrefix> Expected(const v1::MembersResponse& view,
                                 const std::vector<Hash128>& chain,
                                 const std::string& excluded = {}) {
  const std::vector<v1::Member> members(view.members().begin(), view.members().end());
  const placement::Placement placement(members);
  std::map<std::string, uint32_t> prefix;
  std::map<std::string, bool> broken;
  for (const Hash128& hash : chain) {
    std::vector<std::string> owners;
    for (size_t m : placement.Owners(hash, 2)) owners.push_back(placement.member(m).id());
    for (const v1::Member& member : members) {
      if (member.id() == excluded || broken[member.id()]) continue;
      if (std::find(owners.begin(), owners.end(), member.id()) != owners.end()) {
        ++prefix[member.id()];
      } else {
        broken[member.id()] = true;
      }
    }
  }
  std::vector<NodePrefix> expected;
  for (const auto& [id, n] : prefix) {
    if (n > 0) expected.push_back(NodePrefix{.node_id = id, .prefix_pages = n});
  }
  std::sort(expected.begin(), expected.end(), [](const NodePrefix& a, const NodePrefix& b) {
    return a.prefix_pages != b.prefix_pages ? a.prefix_pages > b.prefix_pages
                                            : a.node_id < b.node_id;
  });
  return expected;
}

std::string Show(const std::vector<NodePrefix>& prefixes) {
  std::string out;
  for (const NodePrefix& p : prefixes) absl::StrAppend(&out, p.node_id, "=", p.prefix_pages, " ");
  return out;
}

// Waits (bounded) until the router answers `want` for `chain`.
::testing::AssertionResult AwaitLocate(const PrefixRouter& router,
                                       const std::vector<Hash128>& chain,
                                       const std::vector<NodePrefix>& want) {
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  std::vector<NodePrefix> got;
  while (absl::Now() < deadline) {
    got = router.Locate(chain);
    if (got == want) return ::testing::AssertionSuccess();
    absl::SleepFor(absl::Milliseconds(20));
  }
  return ::testing::AssertionFailure() << "want " << Show(want) << "got " << Show(got);
}

TEST_F(ClusterTest, RouterFindsEachPrefixWhereThePlacementPutIt) {
  std::unique_ptr<client::ClusterClient> cluster = StartCluster(3, 2);
  ASSERT_NE(cluster, nullptr);
  PrefixRouter router(cluster.get(), PrefixRouterOptions{.layer = 1});
  ASSERT_TRUE(router.AwaitSynced(absl::Seconds(30)));
  EXPECT_EQ(router.stats().members, 3u);
  const std::vector<Hash128> chain = PromptChain(SmallLayout(), 40, 71);
  EXPECT_TRUE(router.Locate(chain).empty());

  const PageSet pages = MakePages(SmallLayout(), chain, 2);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  const std::vector<NodePrefix> want = Expected(cluster->view(), chain);
  ASSERT_FALSE(want.empty());
  EXPECT_TRUE(AwaitLocate(router, chain, want));
  // A prefix of the chain is found to its own length; another prompt nowhere.
  const std::vector<Hash128> head(chain.begin(), chain.begin() + 5);
  EXPECT_TRUE(AwaitLocate(router, head, Expected(cluster->view(), head)));
  EXPECT_TRUE(router.Locate(PromptChain(SmallLayout(), 40, 72)).empty());

  // A page deleted everywhere ends every node's prefix there.
  ASSERT_TRUE(cluster->Delete({PageKey{.hash = chain[3], .layer = 1}}).ok());
  const std::vector<Hash128> three(chain.begin(), chain.begin() + 3);
  EXPECT_TRUE(AwaitLocate(router, chain, Expected(cluster->view(), three)));
}

// A member killed is dropped once it is down; started again it is a new
// incarnation (a new event log), and the router takes a fresh snapshot of
// the pages it kept on disk.
TEST_F(ClusterTest, RouterFollowsAMemberThatDiesAndReturns) {
  std::unique_ptr<client::ClusterClient> cluster = StartCluster(3, 1);
  ASSERT_NE(cluster, nullptr);
  PrefixRouter router(cluster.get(), PrefixRouterOptions{.layer = 0,
                                                         .member_poll = absl::Milliseconds(100),
                                                         .retry_interval = absl::Milliseconds(100)});
  ASSERT_TRUE(router.AwaitSynced(absl::Seconds(30)));
  const v1::MembersResponse three_up = cluster->view();
  // A prompt whose first page node 0 holds, so that its return shows.
  std::vector<Hash128> chain;
  uint32_t node0_prefix = 0;
  for (uint32_t prompt = 73; node0_prefix == 0; ++prompt) {
    chain = PromptChain(SmallLayout(), 24, prompt);
    for (const NodePrefix& p : Expected(three_up, chain)) {
      if (p.node_id == NodeId(0)) node0_prefix = p.prefix_pages;
    }
  }
  const PageSet pages = MakePages(SmallLayout(), chain, 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());
  // Pinned pages are written through to disk and survive the kill.
  ASSERT_TRUE(cluster->Pin(pages.keys, 600'000).ok());
  ASSERT_TRUE(AwaitLocate(router, chain, Expected(three_up, chain)));
  const uint64_t snapshots = router.stats().snapshots;

  // Until it returns, node 0 is found nowhere.
  auto node0 = [&]() -> uint32_t {
    for (const NodePrefix& p : router.Locate(chain)) {
      if (p.node_id == NodeId(0)) return p.prefix_pages;
    }
    return 0;
  };
  ASSERT_TRUE(nodes_[0]->Signal(SIGKILL).ok());
  ASSERT_NO_FATAL_FAILURE(AwaitView(*cluster, 2, NodeId(0)));
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (node0() != 0 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(node0(), 0u) << Show(router.Locate(chain));
  EXPECT_EQ(router.stats().members, 2u);

  // Back with the pages on its disk: at least the prefix it held before.
  StartNode(0);
  ASSERT_NO_FATAL_FAILURE(AwaitView(*cluster, 3));
  deadline = absl::Now() + absl::Seconds(30);
  while (node0() < node0_prefix && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_GE(node0(), node0_prefix) << Show(router.Locate(chain));
  EXPECT_GT(router.stats().snapshots, snapshots);
  EXPECT_EQ(router.stats().rejected_batches, 0u);
}

}  // namespace
}  // namespace kvtier
