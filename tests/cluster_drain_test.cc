// The Drain RPC on a real cluster: an operator's hand-off while the node
// stays up and keeps serving reads.
#include <set>
#include <string>

#include "placement/placement.h"
#include "tests/cluster_fixture.h"

namespace kvtier {
namespace {

using cluster_testing::ClusterTest;
using testing::MakePages;
using testing::PageSet;
using testing::PromptChain;
using testing::SmallLayout;

TEST_F(ClusterTest, DrainHandsEveryPageOnAndTheNodeKeepsServing) {
  std::unique_ptr<client::ClusterClient> cluster = StartCluster(3, 1);
  ASSERT_NE(cluster, nullptr);
  const PageSet pages = MakePages(SmallLayout(), PromptChain(SmallLayout(), 60, 51), 1);
  ASSERT_TRUE(cluster->BatchPut(pages.ToPut(SmallLayout())).ok());

  std::unique_ptr<client::StoreClient> node0 = Direct(0);
  absl::StatusOr<v1::DrainResponse> drained = node0->Drain(30);
  ASSERT_TRUE(drained.ok()) << drained.status();
  EXPECT_EQ(drained->node_id(), NodeId(0));
  EXPECT_TRUE(drained->handed_off());
  EXPECT_EQ(drained->copy_failures(), 0u);
  EXPECT_GT(drained->pages_copied(), 0u);

  // Node 0 is draining in every view; each page is on its two owners among
  // the others, and node 0 still answers reads of what it held.
  ASSERT_TRUE(cluster->RefreshView().ok());
  const v1::MembersResponse view = cluster->view();
  for (const v1::Member& m : view.members()) {
    EXPECT_EQ(m.state(), m.id() == NodeId(0) ? v1::MEMBER_DRAINING : v1::MEMBER_UP) << m.id();
  }
  const std::vector<v1::Member> members(view.members().begin(), view.members().end());
  const placement::Placement placement(members);
  size_t held_by_0 = 0;
  for (const PageKey& key : pages.keys) {
    for (size_t m : placement.Owners(key.hash, 2)) {
      const std::string id = placement.member(m).id();
      EXPECT_NE(id, NodeId(0));
      EXPECT_TRUE(Holds(id == NodeId(1) ? 1 : 2, key)) << id;
    }
    held_by_0 += Holds(0, key);
  }
  EXPECT_GT(held_by_0, 0u);
  ExpectAllReadable(*cluster, pages);
  EXPECT_EQ(cluster->stats().repaired_pages, 0u);

  // A second drain finds nothing left to move.
  absl::StatusOr<v1::DrainResponse> again = node0->Drain(10);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->handed_off());
  EXPECT_EQ(again->pages_copied(), drained->pages_copied());
  EXPECT_EQ(node0->Drain(3601).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
