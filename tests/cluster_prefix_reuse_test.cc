// Prefix reuse across nodes: a worker whose cluster client is seeded with
// node C loads a prefix that another worker wrote through node A, with the
// logits of recomputing it bit for bit, and still does once A is killed
// (the pages' second copies serve the load).
#include <signal.h>

#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "tests/cluster_fixture.h"
#include "worker/model/prefix_reuse.h"
#include "worker/model/prefix_reuse_testing.h"
#include "worker/transfer/cluster_page_store.h"

namespace kvtier {
namespace {

using cluster_testing::ClusterTest;
namespace reuse = model::testing;

constexpr int kSteps = 6;

TEST_F(ClusterTest, AWorkerOnNodeCReusesAPrefixWrittenThroughNodeA) {
  StartNodes(3);
  auto m = model::LoadModel(std::string(KVTIER_STORIES260K_DIR) + "/stories260K.bin",
                            std::string(KVTIER_STORIES260K_DIR) + "/tok512.bin");
  ASSERT_TRUE(m.ok()) << m.status();
  auto est = reuse::FixedEstimator(m->weights.config, 1e12);
  ASSERT_TRUE(est.ok());

  // Worker 1, seeded with node A, computes the first prompt; its pages go
  // to their owners (R = 2, W = 2) wherever they are.
  auto store_a = worker::ClusterPageStore::Connect({nodes_[0]->target()});
  ASSERT_TRUE(store_a.ok()) << store_a.status();
  auto b1 = reuse::MakeBackend(m->weights, store_a->get());
  ASSERT_TRUE(b1.ok()) << b1.status();
  auto first = reuse::RunRequest(m->weights, **b1, reuse::SharedPrefixPrompt(1), kSteps, *est);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->report.reused_tokens, 0u);
  b1->reset();

  // The reference: the second prompt recomputed against an empty store.
  auto ref = reuse::RecomputedRequest(m->weights, reuse::SharedPrefixPrompt(2), kSteps, *est);
  ASSERT_TRUE(ref.ok()) << ref.status();

  auto run_through_c = [&]() -> absl::StatusOr<reuse::Request> {
    ASSIGN_OR_RETURN(auto store_c, worker::ClusterPageStore::Connect({nodes_[2]->target()}));
    ASSIGN_OR_RETURN(auto backend, reuse::MakeBackend(m->weights, store_c.get()));
    return reuse::RunRequest(m->weights, *backend, reuse::SharedPrefixPrompt(2), kSteps, *est);
  };
  auto expect_reused = [&](const reuse::Request& second, uint32_t pages) {
    EXPECT_EQ(second.report.stored_pages, pages);
    EXPECT_EQ(second.report.reused_tokens, pages * 16);
    EXPECT_EQ(second.report.fetch.pages_loaded, pages * 5);
    EXPECT_EQ(second.report.fallbacks, 0u);
    ASSERT_EQ(second.logits.size(), ref->logits.size());
    for (size_t i = 0; i < ref->logits.size(); ++i) {
      EXPECT_EQ(second.logits[i], ref->logits[i]) << "row " << i;
    }
  };
  absl::StatusOr<reuse::Request> second = run_through_c();
  ASSERT_TRUE(second.ok()) << second.status();
  // The 18 pages of the shared 300-token prefix (the 19th holds tokens that
  // differ).
  expect_reused(*second, 18);

  // Pins span members behind one id.
  const PageKey key{.hash = reuse::PageHashOf(reuse::SharedPrefixPrompt(1), 0), .layer = 0};
  absl::StatusOr<std::string> pin = (*store_a)->Pin({key}, 60'000, "");
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ(pin->size(), 16u);
  EXPECT_TRUE((*store_a)->Pin({key}, 60'000, *pin).ok());  // extended
  EXPECT_EQ((*store_a)->Pin({key}, 60'000, "short").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store_a)->Pin({key}, 60'000, std::string(16, 'x')).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE((*store_a)->Unpin(*pin).ok());
  EXPECT_EQ((*store_a)->Unpin(*pin).code(), absl::StatusCode::kNotFound);

  // Node A dies: every page still has a copy on another node. The second
  // prompt's own pages are stored now, so 19 of its 20 pages are found (the
  // last one is always recomputed).
  ASSERT_TRUE(nodes_[0]->Signal(SIGKILL).ok());
  absl::StatusOr<reuse::Request> third = run_through_c();
  ASSERT_TRUE(third.ok()) << third.status();
  expect_reused(*third, 19);
}

}  // namespace
}  // namespace kvtier
