// PrefixFetch on its own, through the in-process store: pages land in the
// caller's K and V rows (fp32 in place, fp16 widened), bad layouts are
// refused before anything is asked, and once a fetch is destroyed nothing
// writes into its rows any more, even a get that was running then.
#include "worker/model/prefix_fetch.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "common/checksum.h"
#include "common/page_key.h"
#include "gtest/gtest.h"
#include "kernels/dtype.h"
#include "worker/transfer/in_process_page_store.h"
#include "worker/transfer/page_transfer_queue.h"

namespace kvtier::model {
namespace {

constexpr uint32_t kLayers = 2;
constexpr uint32_t kPages = 5;

PageLayout Layout(DType dtype) {
  return PageLayout{.page_size = 4, .n_kv_heads = 2, .head_dim = 3, .dtype = dtype};
}

// The value of element e of page p's K (v = false) or V in `layer`: exact
// in fp16 too.
float Value(uint32_t layer, uint32_t p, bool v, size_t e) {
  return static_cast<float>(layer * 1000 + p * 100 + (v ? 50 : 0) + e) / 4.0f;
}

std::vector<Hash128> Chain() {
  std::vector<Hash128> chain;
  for (uint32_t p = 0; p < kPages; ++p) chain.push_back(Hash128{.hi = 99, .lo = 7 + p});
  return chain;
}

// Stores every page of the chain, every layer.
void Fill(worker::InProcessPageStore& store, const PageLayout& layout) {
  const std::vector<Hash128> chain = Chain();
  const size_t tensor = layout.ElementsPerTensor();
  const auto type = static_cast<kernels::ScalarType>(layout.dtype);
  std::vector<worker::StoredPage> pages;
  for (uint32_t layer = 0; layer < kLayers; ++layer) {
    for (uint32_t p = 0; p < kPages; ++p) {
      worker::StoredPage page;
      page.key = PageKey{.hash = chain[p], .layer = layer};
      page.layout = layout;
      page.bytes.resize(layout.PageBytes());
      for (size_t e = 0; e < tensor; ++e) {
        kernels::StoreFromFloat(page.bytes.data(), type, e, Value(layer, p, false, e));
        kernels::StoreFromFloat(page.bytes.data(), type, tensor + e, Value(layer, p, true, e));
      }
      page.checksum = PageChecksum(page.bytes.data(), page.bytes.size());
      pages.push_back(std::move(page));
    }
  }
  ASSERT_TRUE(store.Put(pages).ok());
}

struct Rows {
  explicit Rows(const PageLayout& layout)
      : k(kLayers, std::vector<float>(kPages * layout.ElementsPerTensor(), -1.0f)),
        v(k) {}
  std::vector<PrefixRows> Places() {
    std::vector<PrefixRows> places;
    for (uint32_t l = 0; l < kLayers; ++l) places.push_back({.k = k[l].data(), .v = v[l].data()});
    return places;
  }
  std::vector<std::vector<float>> k, v;
};

PrefixFetchOptions SmallBatches() {
  PrefixFetchOptions o;
  o.batch_pages = 2;
  o.window_pages = 4;
  return o;
}

class PrefixFetchTest : public ::testing::TestWithParam<DType> {};

TEST_P(PrefixFetchTest, PagesLandInTheRowsOfTheirLayer) {
  const PageLayout layout = Layout(GetParam());
  worker::InProcessPageStore store;
  ASSERT_NO_FATAL_FAILURE(Fill(store, layout));
  auto queue = worker::PageTransferQueue::Create(&store, {});
  ASSERT_TRUE(queue.ok()) << queue.status();
  Rows rows(layout);
  auto fetch =
      PrefixFetch::Start(queue->get(), Chain(), kLayers, layout, SmallBatches(), rows.Places());
  ASSERT_TRUE(fetch.ok()) << fetch.status();
  EXPECT_EQ((*fetch)->TakeLayer(1).code(), absl::StatusCode::kFailedPrecondition);
  const size_t tensor = layout.ElementsPerTensor();
  for (uint32_t layer = 0; layer < kLayers; ++layer) {
    ASSERT_TRUE((*fetch)->TakeLayer(layer).ok()) << layer;
    for (uint32_t p = 0; p < kPages; ++p) {
      for (size_t e = 0; e < tensor; ++e) {
        ASSERT_EQ(rows.k[layer][p * tensor + e], Value(layer, p, false, e)) << layer << " " << p;
        ASSERT_EQ(rows.v[layer][p * tensor + e], Value(layer, p, true, e)) << layer << " " << p;
      }
    }
  }
  const PrefixFetchStats stats = (*fetch)->stats();
  EXPECT_EQ(stats.pages_loaded, kLayers * kPages);
  EXPECT_EQ(stats.bytes_loaded, kLayers * kPages * layout.PageBytes());
  EXPECT_EQ(stats.batches, kLayers * 3u);  // 2 + 2 + 1 pages a layer
  EXPECT_EQ(stats.pages_rejected, 0u);
}

INSTANTIATE_TEST_SUITE_P(DTypes, PrefixFetchTest, ::testing::Values(DType::kF32, DType::kF16),
                         [](const ::testing::TestParamInfo<DType>& p) {
                           return std::string(DTypeName(p.param));
                         });

TEST(PrefixFetchRefusalTest, LayoutsThatDoNotLoadIntoRowsAndMissingRows) {
  worker::InProcessPageStore store;
  auto queue = worker::PageTransferQueue::Create(&store, {});
  ASSERT_TRUE(queue.ok()) << queue.status();
  Rows rows(Layout(DType::kF32));
  PageLayout interleaved = Layout(DType::kF32);
  interleaved.arrangement = Arrangement::kTokenInterleaved;
  for (const PageLayout& layout : {interleaved, Layout(DType::kInt8)}) {
    EXPECT_EQ(PrefixFetch::Start(queue->get(), Chain(), kLayers, layout, SmallBatches(),
                                 rows.Places())
                  .status()
                  .code(),
              absl::StatusCode::kInvalidArgument);
  }
  std::vector<PrefixRows> one_short = rows.Places();
  one_short.pop_back();
  EXPECT_EQ(PrefixFetch::Start(queue->get(), Chain(), kLayers, Layout(DType::kF32),
                               SmallBatches(), one_short)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<PrefixRows> no_v = rows.Places();
  no_v[1].v = nullptr;
  EXPECT_EQ(PrefixFetch::Start(queue->get(), Chain(), kLayers, Layout(DType::kF32),
                               SmallBatches(), no_v)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  // Nothing was asked of the store, nothing written.
  EXPECT_EQ((*queue)->inflight_transfers(), 0);
  EXPECT_EQ(rows.k[0][0], -1.0f);
}

// The caller reuses the rows' memory once the fetch is gone: a get still
// running at that moment must have finished writing by then.
TEST(PrefixFetchLifetimeTest, NothingWritesIntoTheRowsOnceTheFetchIsGone) {
  const PageLayout layout = Layout(DType::kF32);
  worker::InProcessPageStore store;
  ASSERT_NO_FATAL_FAILURE(Fill(store, layout));
  auto queue = worker::PageTransferQueue::Create(&store, {});
  ASSERT_TRUE(queue.ok()) << queue.status();
  Rows rows(layout);
  store.SetMode(worker::InProcessPageStore::Mode::kHang);
  auto fetch =
      PrefixFetch::Start(queue->get(), Chain(), kLayers, layout, SmallBatches(), rows.Places());
  ASSERT_TRUE(fetch.ok()) << fetch.status();
  // Let the queue's threads enter the hung gets.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  std::atomic<bool> gone{false};
  std::thread end([&] {
    fetch->reset();
    gone = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // Gets are still inside the store: the fetch cannot be gone yet.
  EXPECT_FALSE(gone.load());
  store.SetMode(worker::InProcessPageStore::Mode::kUp);
  end.join();
  // The rows are the caller's again: what it writes stays.
  for (auto* side : {&rows.k, &rows.v}) {
    for (std::vector<float>& layer : *side) std::fill(layer.begin(), layer.end(), -2.0f);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  for (auto* side : {&rows.k, &rows.v}) {
    for (const std::vector<float>& layer : *side) {
      for (float x : layer) ASSERT_EQ(x, -2.0f);
    }
  }
}

}  // namespace
}  // namespace kvtier::model
