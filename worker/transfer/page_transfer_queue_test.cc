#include "worker/transfer/page_transfer_queue.h"

#include <string>

#include "absl/time/clock.h"
#include "common/checksum.h"
#include "gtest/gtest.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker {
namespace {

PageLayout Layout() {
  return PageLayout{.page_size = 2, .n_kv_heads = 1, .head_dim = 2, .dtype = DType::kF32};
}

StoredPage MakePage(uint64_t id, char fill) {
  StoredPage page;
  page.key = PageKey{.hash = Hash128{id, id * 7}, .layer = 3};
  page.layout = Layout();
  page.bytes.assign(page.layout.PageBytes(), fill);
  page.checksum = PageChecksum(page.bytes.data(), page.bytes.size());
  return page;
}

std::unique_ptr<PageTransferQueue> MakeQueue(PageStoreBackend* store,
                                             TransferQueueOptions options = {}) {
  auto queue = PageTransferQueue::Create(store, options);
  EXPECT_TRUE(queue.ok()) << queue.status();
  return *std::move(queue);
}

TEST(PageTransferQueueTest, PutThenGetReturnsTheSameBytes) {
  InProcessPageStore store;
  auto queue = MakeQueue(&store);
  StoredPage page = MakePage(1, 'a');
  auto put = queue->SubmitPut({page}, absl::Seconds(5));
  ASSERT_TRUE(put.ok());
  EXPECT_TRUE(queue->Wait(*put).status.ok());
  auto get = queue->SubmitGet({page.key, MakePage(2, 'b').key}, absl::Seconds(5));
  ASSERT_TRUE(get.ok());
  TransferResult result = queue->Wait(*get);
  ASSERT_TRUE(result.status.ok()) << result.status;
  ASSERT_EQ(result.pages.size(), 2u);
  EXPECT_EQ(result.pages[0].status, FetchStatus::kOk);
  EXPECT_EQ(result.pages[0].bytes, page.bytes);
  EXPECT_EQ(result.pages[0].checksum, page.checksum);
  EXPECT_EQ(result.pages[1].status, FetchStatus::kNotFound);
  EXPECT_EQ(queue->inflight_transfers(), 0);
}

TEST(PageTransferQueueTest, LostPageIsReportedPerPage) {
  InProcessPageStore store;
  auto queue = MakeQueue(&store);
  StoredPage page = MakePage(1, 'a');
  ASSERT_TRUE(store.Put({page}).ok());
  ASSERT_TRUE(store.MarkLost(page.key).ok());
  auto get = queue->SubmitGet({page.key}, absl::Seconds(5));
  ASSERT_TRUE(get.ok());
  TransferResult result = queue->Wait(*get);
  ASSERT_TRUE(result.status.ok());
  EXPECT_EQ(result.pages[0].status, FetchStatus::kLost);
  EXPECT_TRUE(result.pages[0].bytes.empty());
  EXPECT_FALSE(store.Contains(page.key));
}

TEST(PageTransferQueueTest, StoreDownFailsWithUnavailable) {
  InProcessPageStore store;
  store.SetMode(InProcessPageStore::Mode::kDown);
  auto queue = MakeQueue(&store);
  auto get = queue->SubmitGet({MakePage(1, 'a').key}, absl::Seconds(5));
  ASSERT_TRUE(get.ok());
  EXPECT_EQ(queue->Wait(*get).status.code(), absl::StatusCode::kUnavailable);
}

TEST(PageTransferQueueTest, HungStoreFailsAtTheDeadlineAndHoldsItsWindowPlace) {
  InProcessPageStore store;
  store.SetMode(InProcessPageStore::Mode::kHang);
  TransferQueueOptions options;
  options.n_threads = 1;
  options.max_inflight_transfers = 2;
  auto queue = MakeQueue(&store, options);
  auto get = queue->SubmitGet({MakePage(1, 'a').key}, absl::Milliseconds(50));
  ASSERT_TRUE(get.ok());
  TransferResult result = queue->Wait(*get);
  EXPECT_EQ(result.status.code(), absl::StatusCode::kDeadlineExceeded);
  // The hung call still occupies the window until the store returns.
  EXPECT_EQ(queue->inflight_transfers(), 1);
  auto queued = queue->SubmitGet({MakePage(2, 'a').key}, absl::Milliseconds(50));
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ(queue->SubmitGet({MakePage(3, 'a').key}, absl::Seconds(1)).status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(queue->Wait(*queued).status.code(), absl::StatusCode::kDeadlineExceeded);
  store.SetMode(InProcessPageStore::Mode::kUp);
  // Once the store answers, the window drains.
  while (queue->inflight_transfers() > 0) absl::SleepFor(absl::Milliseconds(1));
  auto after = queue->SubmitGet({MakePage(1, 'a').key}, absl::Seconds(5));
  ASSERT_TRUE(after.ok());
  EXPECT_TRUE(queue->Wait(*after).status.ok());
}

TEST(PageTransferQueueTest, WindowBoundsPagesInFlight) {
  InProcessPageStore store;
  store.SetMode(InProcessPageStore::Mode::kHang);
  TransferQueueOptions options;
  options.max_inflight_pages = 3;
  options.max_batch_pages = 2;
  auto queue = MakeQueue(&store, options);
  auto first = queue->SubmitPut({MakePage(1, 'a'), MakePage(2, 'b')}, absl::Seconds(5));
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(queue->SubmitPut({MakePage(3, 'a'), MakePage(4, 'b')}, absl::Seconds(5))
                .status()
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(queue->SubmitPut({MakePage(3, 'a'), MakePage(4, 'b'), MakePage(5, 'c')},
                             absl::Seconds(5))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(queue->inflight_pages(), 2);
  store.SetMode(InProcessPageStore::Mode::kUp);
  EXPECT_TRUE(queue->Wait(*first).status.ok());
  EXPECT_EQ(queue->inflight_pages(), 0);
  EXPECT_TRUE(store.Contains(MakePage(2, 'b').key));
}

TEST(PageTransferQueueTest, AbandonedTransferIsReleased) {
  InProcessPageStore store;
  auto queue = MakeQueue(&store);
  auto put = queue->SubmitPut({MakePage(1, 'a')}, absl::Seconds(5));
  ASSERT_TRUE(put.ok());
  queue->Abandon(*put);
  EXPECT_EQ(queue->State(*put).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(queue->Wait(*put).status.code(), absl::StatusCode::kNotFound);
  while (queue->inflight_transfers() > 0) absl::SleepFor(absl::Milliseconds(1));
}

TEST(PageTransferQueueTest, RejectsBadOptionsAndArguments) {
  InProcessPageStore store;
  TransferQueueOptions options;
  options.n_threads = 0;
  EXPECT_EQ(PageTransferQueue::Create(&store, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options = {};
  options.max_inflight_pages = 1;
  EXPECT_EQ(PageTransferQueue::Create(&store, options).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageTransferQueue::Create(nullptr, {}).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto queue = MakeQueue(&store);
  EXPECT_EQ(queue->SubmitPut({MakePage(1, 'a')}, absl::ZeroDuration()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(InProcessPageStoreTest, PutIsAtomicAndVerifiesChecksums) {
  InProcessPageStore store;
  StoredPage good = MakePage(1, 'a');
  StoredPage bad = MakePage(2, 'b');
  bad.checksum ^= 1;
  EXPECT_EQ(store.Put({good, bad}).code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(store.page_count(), 0u);
  EXPECT_EQ(store.Put({good, good}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(store.Put({good}).ok());
  EXPECT_TRUE(store.Put({good}).ok());  // content-addressed: a repeat is fine
  EXPECT_EQ(store.page_count(), 1u);
}

TEST(InProcessPageStoreTest, PinsNeedStoredPagesAndUnpinReleases) {
  InProcessPageStore store;
  StoredPage page = MakePage(1, 'a');
  EXPECT_EQ(store.Pin({page.key}, 1000, "").status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store.Put({page}).ok());
  absl::StatusOr<std::string> pin = store.Pin({page.key}, 1000, "");
  ASSERT_TRUE(pin.ok());
  EXPECT_EQ(store.pinned_key_count(), 1u);
  std::string unknown = *pin;
  unknown.back() ^= 1;
  EXPECT_EQ(store.Pin({}, 1000, unknown).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(store.Unpin(*pin).ok());
  EXPECT_EQ(store.live_pin_count(), 0u);
  EXPECT_EQ(store.Unpin(*pin).code(), absl::StatusCode::kNotFound);
}

// Ids as a real store's (store.proto): 16 bytes, each pin its own; an
// empty id is never a pin, one of another length is INVALID_ARGUMENT.
TEST(InProcessPageStoreTest, PinIdsAreSixteenBytesAndChecked) {
  InProcessPageStore store;
  StoredPage page = MakePage(1, 'a');
  ASSERT_TRUE(store.Put({page}).ok());
  absl::StatusOr<std::string> first = store.Pin({page.key}, 1000, "");
  absl::StatusOr<std::string> second = store.Pin({page.key}, 1000, "");
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(first->size(), 16u);
  EXPECT_EQ(second->size(), 16u);
  EXPECT_NE(*first, *second);
  EXPECT_EQ(*store.Pin({page.key}, 1000, *first), *first);  // extends, same id
  EXPECT_EQ(store.live_pin_count(), 2u);
  EXPECT_EQ(store.Pin({page.key}, 1000, "12345").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Unpin("12345").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store.Unpin("").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store.live_pin_count(), 2u);
}

}  // namespace
}  // namespace kvtier::worker
