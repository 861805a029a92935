// Prefix reuse through a real kvtier-server: a second worker (its own
// backend and client) that shares a prompt prefix with the first finds it
// with one Lookup, loads it, and its logits equal those of recomputing
// the prompt bit for bit: with the pages copied out of a local lane's
// segment straight into the prompt rows, and with the pages inline in the
// replies (copied into the rows on the transfer queue's threads).
#include <memory>
#include <string>

#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "worker/model/prefix_reuse.h"
#include "worker/model/prefix_reuse_testing.h"
#include "worker/transfer/client_page_store.h"

namespace kvtier::model {
namespace {

const std::string kDir = KVTIER_STORIES260K_DIR;
constexpr int kSteps = 6;

class PrefixReuseServerTest : public ::testing::TestWithParam<bool> {};

TEST_P(PrefixReuseServerTest, SecondWorkerLoadsThePrefixAndMatchesRecompute) {
  const bool lanes = GetParam();
  auto m = LoadModel(kDir + "/stories260K.bin", kDir + "/tok512.bin");
  ASSERT_TRUE(m.ok()) << m.status();
  kvtier::testing::TempDir dir;
  auto server =
      kvtier::testing::ServerProcess::Start({"--data_dir=" + dir.path() + "/data"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  client::ClientOptions copts;
  copts.deadline_ms = 5000;
  copts.local_lanes = lanes;
  auto est = testing::FixedEstimator(m->weights.config, 1e12);
  ASSERT_TRUE(est.ok());

  // Worker 1 computes the first prompt and backs its pages up.
  auto store1 = worker::ClientPageStore::Connect((*server)->target(), copts);
  ASSERT_TRUE(store1.ok()) << store1.status();
  auto b1 = testing::MakeBackend(m->weights, store1->get());
  ASSERT_TRUE(b1.ok()) << b1.status();
  auto first = testing::RunRequest(m->weights, **b1, testing::SharedPrefixPrompt(1), kSteps, *est);
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->report.reused_tokens, 0u);
  b1->reset();

  // The reference: the second prompt recomputed against an empty store.
  auto ref = testing::RecomputedRequest(m->weights, testing::SharedPrefixPrompt(2), kSteps, *est);
  ASSERT_TRUE(ref.ok()) << ref.status();

  // Worker 2, its own client, loads the shared prefix.
  auto client2 = client::StoreClient::Connect((*server)->target(), copts);
  ASSERT_TRUE(client2.ok()) << client2.status();
  worker::ClientPageStore store2(client2->get());
  auto b2 = testing::MakeBackend(m->weights, &store2);
  ASSERT_TRUE(b2.ok()) << b2.status();
  auto second =
      testing::RunRequest(m->weights, **b2, testing::SharedPrefixPrompt(2), kSteps, *est);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->report.stored_pages, 18u);
  EXPECT_EQ(second->report.reused_tokens, 288u);
  EXPECT_EQ(second->report.fetch.pages_loaded, 18u * 5);
  EXPECT_EQ(second->report.fallbacks, 0u);
  ASSERT_EQ(second->logits.size(), ref->logits.size());
  for (size_t i = 0; i < ref->logits.size(); ++i) {
    EXPECT_EQ(second->logits[i], ref->logits[i]) << "row " << i;
  }
  EXPECT_EQ((*b2)->counters().pages_adopted, 18u * 5);
  // The pages took the path asked for (the probe read layer 0's too).
  const client::DataPlaneStats paths = (*client2)->data_plane_stats();
  EXPECT_GE(lanes ? paths.lane_get_pages : paths.inline_get_pages, 18u * 5);
  EXPECT_EQ(lanes ? paths.inline_get_pages : paths.lane_get_pages, 0u);
}

INSTANTIATE_TEST_SUITE_P(Paths, PrefixReuseServerTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) {
                           return p.param ? std::string("LocalLane") : std::string("Inline");
                         });

}  // namespace
}  // namespace kvtier::model
