#include "kvstore/service/admission.h"

#include <atomic>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "gtest/gtest.h"

namespace kvtier::store {
namespace {

TEST(InflightBytesTest, GrantsHoldTheirBytesUntilDestroyed) {
  InflightBytes budget(100);
  absl::StatusOr<InflightBytes::Grant> a = budget.Acquire(60, "a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->bytes(), 60u);
  EXPECT_EQ(budget.held_bytes(), 60u);
  absl::StatusOr<InflightBytes::Grant> b = budget.Acquire(41, "b");
  EXPECT_EQ(b.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("b: 41 bytes"), absl::string_view::npos) << b.status();
  EXPECT_EQ(budget.held_bytes(), 60u);
  {
    absl::StatusOr<InflightBytes::Grant> c = budget.Acquire(40, "c");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(budget.held_bytes(), 100u);
    // Moving keeps one owner: the bytes return once.
    InflightBytes::Grant moved = *std::move(c);
    InflightBytes::Grant again = std::move(moved);
    EXPECT_EQ(budget.held_bytes(), 100u);
  }
  EXPECT_EQ(budget.held_bytes(), 60u);
  InflightBytes::Grant assigned;
  assigned = *std::move(a);
  EXPECT_EQ(budget.held_bytes(), 60u);
  assigned = InflightBytes::Grant();
  EXPECT_EQ(budget.held_bytes(), 0u);
  EXPECT_EQ(budget.Acquire(101, "huge").status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(budget.Acquire(0, "empty").ok());
  EXPECT_EQ(budget.refused(), 2u);
}

TEST(InflightBytesTest, ConcurrentGrantsNeverExceedTheCap) {
  InflightBytes budget(1000);
  std::atomic<uint64_t> peak{0};
  std::atomic<int> refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 2000; ++i) {
        absl::StatusOr<InflightBytes::Grant> g = budget.Acquire(100 + (t * 37 + i) % 200, "x");
        if (!g.ok()) {
          ++refused;
          continue;
        }
        uint64_t held = budget.held_bytes();
        uint64_t seen = peak.load();
        while (held > seen && !peak.compare_exchange_weak(seen, held)) {
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_LE(peak.load(), 1000u);
  EXPECT_EQ(budget.held_bytes(), 0u);
  EXPECT_EQ(budget.refused(), static_cast<uint64_t>(refused.load()));
}

TEST(WaitingPoolTest, RunsEveryTaskAndRefusesPastItsQueue) {
  absl::Notification release;
  std::atomic<int> ran{0};
  {
    WaitingPool pool(/*threads=*/2, /*max_queued=*/3);
    // Two tasks occupy both threads...
    absl::Notification started[2];
    for (int i = 0; i < 2; ++i) {
      ASSERT_TRUE(pool.Submit([&, i] {
                        started[i].Notify();
                        release.WaitForNotification();
                        ++ran;
                      })
                      .ok());
    }
    for (absl::Notification& n : started) n.WaitForNotification();
    // ... three more wait in the queue, and the next is refused unrun.
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(pool.Submit([&] { ++ran; }).ok());
    bool refused_ran = false;
    absl::Status refused = pool.Submit([&] { refused_ran = true; });
    EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
    EXPECT_EQ(pool.started(), 2u);
    release.Notify();
    // The destructor runs what is queued before joining.
  }
  EXPECT_EQ(ran.load(), 5);
}

}  // namespace
}  // namespace kvtier::store
