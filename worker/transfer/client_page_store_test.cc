// The worker against the real kvtier-server through the client library:
// backup, pins, bit-identical recall, release on cancel, and a store that
// goes away making recall fail by its deadline.
#include "worker/transfer/client_page_store.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "gtest/gtest.h"
#include "testing/server_process.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/policy/arkvale_policy.h"

namespace kvtier::worker {
namespace {

class ClientPageStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto server = testing::ServerProcess::Start({"--data_dir=" + dir_.path() + "/data"},
                                                dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client::ClientOptions copts;
    copts.deadline_ms = 2000;
    copts.max_attempts = 1;
    auto client = client::StoreClient::Connect(server_->target(), copts);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
    backend_ = std::make_unique<ClientPageStore>(client_.get());
    queue_ = *PageTransferQueue::Create(backend_.get(), TransferQueueOptions());
    ArkvaleOptions a;
    a.topk_pages = 4;
    a.n_unlimited_layers = 0;
    policy_ = *ArkvalePolicy::Create(a);
    KvCacheOptions o;
    o.layout = PageLayout{.page_size = 4, .n_kv_heads = 2, .head_dim = 8, .dtype = DType::kF16};
    o.n_layers = 1;
    o.n_q_heads = 4;
    o.pool_pages_per_layer = 6;
    o.transfer_timeout = absl::Seconds(3);
    cache_ = *KvCacheManager::Create(o, &device_, policy_.get(), queue_.get());
    ASSERT_TRUE(cache_->AddSequence(1, {6}).ok());
  }
  void TearDown() override { cache_.reset(); }

  std::vector<float> Random(size_t n) {
    std::normal_distribution<float> dist;
    std::vector<float> out(n);
    for (float& x : out) x = dist(rng_);
    return out;
  }
  // 32 tokens (8 pages) appended, all backed up; page 1 evicted.
  void FillAndEvictPageOne() {
    std::vector<uint32_t> ids(32);
    for (uint32_t i = 0; i < 32; ++i) ids[i] = 100 + i;
    ASSERT_TRUE(cache_->AppendTokenIds(1, ids).ok());
    std::vector<float> k = Random(24 * 16), v = Random(24 * 16);
    ASSERT_TRUE(cache_->AppendKv(1, 0, k.data(), v.data(), 24).ok());
    page1_ = *cache_->ResidentPageBytes(1, 0, 1);
    k = Random(8 * 16);
    v = Random(8 * 16);
    ASSERT_TRUE(cache_->AppendKv(1, 0, k.data(), v.data(), 8).ok());
    ASSERT_TRUE(cache_->ReapBackups(1, /*wait=*/true).ok());
    PagePlan drop;
    drop.resident = {0, 2, 3, 6, 7};
    ASSERT_TRUE(cache_->ApplyPlan(1, 0, drop).ok());
    ASSERT_EQ(cache_->View(1, 0)->states[1], PageState::kEvicted);
  }

  testing::TempDir dir_;
  std::unique_ptr<testing::ServerProcess> server_;
  std::unique_ptr<client::StoreClient> client_;
  std::unique_ptr<ClientPageStore> backend_;
  std::unique_ptr<PageTransferQueue> queue_;
  std::unique_ptr<ArkvalePolicy> policy_;
  CpuDevice device_;
  std::unique_ptr<KvCacheManager> cache_;
  std::mt19937 rng_{11};
  std::string page1_;
};

TEST_F(ClientPageStoreTest, RecallFromTheServerIsBitIdenticalAndCancelUnpins) {
  ASSERT_NO_FATAL_FAILURE(FillAndEvictPageOne());
  auto stored = client_->BatchGet({*cache_->KeyOf(1, 0, 1)});
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ((*stored)[0].status, v1::PAGE_STATUS_OK);
  PagePlan plan;
  plan.resident = {0, 1, 2, 6, 7};
  ASSERT_TRUE(cache_->ApplyPlan(1, 0, plan).ok());
  ASSERT_TRUE(cache_->FinishRecalls(1, 0).ok());
  EXPECT_EQ(*cache_->ResidentPageBytes(1, 0, 1), page1_);
  // The recall came through the lane's segment, as the get above did: a
  // page without a buffer of the caller's is never written directly into a
  // fresh one.
  EXPECT_EQ(client_->data_plane_stats().lane_get_pages, 2u);
  EXPECT_EQ(client_->data_plane_stats().lane_direct_get_pages, 0u);
  const std::string pin = *cache_->PinId(1);
  ASSERT_EQ(pin.size(), 16u);
  ASSERT_TRUE(cache_->Cancel(1).ok());
  // The pin is gone on the server: releasing it again is NOT_FOUND.
  EXPECT_EQ(client_->Unpin(pin).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(cache_->pool(0).in_use(), 0u);
}

TEST_F(ClientPageStoreTest, StoppedServerMakesRecallFailWithoutHanging) {
  ASSERT_NO_FATAL_FAILURE(FillAndEvictPageOne());
  ASSERT_TRUE(server_->Stop().ok());
  PagePlan plan;
  plan.resident = {0, 1, 2, 6, 7};
  ASSERT_TRUE(cache_->ApplyPlan(1, 0, plan).ok());
  absl::Status s = cache_->FinishRecalls(1, 0);
  EXPECT_TRUE(absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) << s;
  EXPECT_NE(s.message().find("recall of 1 pages"), std::string::npos) << s;
  EXPECT_EQ(cache_->View(1, 0)->states[1], PageState::kEvicted);
}

TEST_F(ClientPageStoreTest, ConnectOwnsItsClient) {
  client::ClientOptions bad;
  bad.max_attempts = 0;
  EXPECT_EQ(ClientPageStore::Connect(server_->target(), bad).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<std::unique_ptr<ClientPageStore>> store =
      ClientPageStore::Connect(server_->target());
  ASSERT_TRUE(store.ok()) << store.status();
  const PageLayout layout{.page_size = 4, .n_kv_heads = 2, .head_dim = 8, .dtype = DType::kF16};
  const std::string bytes(layout.PageBytes(), '\x5a');
  StoredPage page{.key = PageKey{.hash = Hash128{.hi = 9, .lo = 7}, .layer = 3},
                  .layout = layout,
                  .checksum = PageChecksum(bytes.data(), bytes.size()),
                  .bytes = bytes};
  ASSERT_TRUE((*store)->Put({page}).ok());
  absl::StatusOr<std::vector<FetchedPage>> got = (*store)->Get({page.key});
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 1u);
  EXPECT_EQ((*got)[0].status, FetchStatus::kOk);
  EXPECT_EQ((*got)[0].bytes, bytes);
}

}  // namespace
}  // namespace kvtier::worker
