// PinKeeper against the in-process store: live pins are extended on the
// timer, released ones never, and a pin the store forgot is marked lost.
#include "worker/transfer/pin_keeper.h"

#include <functional>
#include <memory>
#include <string>

#include "absl/time/clock.h"
#include "common/checksum.h"
#include "gtest/gtest.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker {
namespace {

bool Eventually(const std::function<bool()>& done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return done();
}

class PinKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    queue_ = *PageTransferQueue::Create(&store_, TransferQueueOptions());
    const PageLayout layout{.page_size = 4, .n_kv_heads = 1, .head_dim = 8, .dtype = DType::kF16};
    StoredPage page{.key = PageKey{.hash = {.hi = 1, .lo = 2}, .layer = 0},
                    .layout = layout,
                    .bytes = std::string(layout.PageBytes(), 'x')};
    page.checksum = PageChecksum(page.bytes.data(), page.bytes.size());
    ASSERT_TRUE(store_.Put({page}).ok());
    key_ = page.key;
  }

  std::shared_ptr<SequencePin> NewPin() {
    auto pin = std::make_shared<SequencePin>();
    absl::StatusOr<std::string> id = store_.Pin({key_}, 1000, "");
    EXPECT_TRUE(id.ok());
    absl::MutexLock lock(&pin->mu);
    pin->pin_id = *std::move(id);
    return pin;
  }

  InProcessPageStore store_;
  std::unique_ptr<PageTransferQueue> queue_;
  PageKey key_;
};

TEST_F(PinKeeperTest, ExtendsLivePinsOnly) {
  PinKeeper keeper(queue_.get(), 1000, absl::Hours(1), absl::Seconds(5));
  std::shared_ptr<SequencePin> live = NewPin();
  std::shared_ptr<SequencePin> released = NewPin();
  {
    absl::MutexLock lock(&released->mu);
    released->released = true;
  }
  std::shared_ptr<SequencePin> unpinned = std::make_shared<SequencePin>();  // no pin_id yet
  keeper.Keep(live);
  keeper.Keep(released);
  keeper.Keep(unpinned);
  const uint64_t calls = store_.pin_calls();
  for (int round = 0; round < 3; ++round) keeper.ExtendNow();
  EXPECT_TRUE(Eventually([&] { return queue_->inflight_transfers() == 0; }));
  EXPECT_EQ(store_.pin_calls() - calls, 3u);  // the live pin's three extensions
  EXPECT_EQ(keeper.extensions(), 6u);         // the unpinned one's do nothing
  EXPECT_EQ(store_.live_pin_count(), 2u);
  absl::MutexLock lock(&live->mu);
  EXPECT_FALSE(live->lost);
}

TEST_F(PinKeeperTest, TheTimerExtendsWithoutBeingAsked) {
  PinKeeper keeper(queue_.get(), 1000, absl::Milliseconds(20), absl::Seconds(5));
  std::shared_ptr<SequencePin> pin = NewPin();  // the keeper holds it weakly
  keeper.Keep(pin);
  const uint64_t calls = store_.pin_calls();
  EXPECT_TRUE(Eventually([&] { return store_.pin_calls() >= calls + 3; }));
}

TEST_F(PinKeeperTest, APinTheStoreForgotIsMarkedLost) {
  PinKeeper keeper(queue_.get(), 1000, absl::Milliseconds(20), absl::Seconds(5));
  std::shared_ptr<SequencePin> pin = NewPin();
  std::string id;
  {
    absl::MutexLock lock(&pin->mu);
    id = pin->pin_id;
  }
  ASSERT_TRUE(store_.Unpin(id).ok());
  keeper.Keep(pin);
  EXPECT_TRUE(Eventually([&] {
    absl::MutexLock lock(&pin->mu);
    return pin->lost;
  }));
  // A lost pin is left to its owner: no more extensions of it.
  const uint64_t calls = store_.pin_calls();
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(store_.pin_calls(), calls);
}

}  // namespace
}  // namespace kvtier::worker
