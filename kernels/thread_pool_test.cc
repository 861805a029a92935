#include "kernels/thread_pool.h"

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier::kernels {
namespace {

TEST(ThreadPoolTest, SizeFollowsRequest) {
  EXPECT_EQ(ThreadPool(1).num_threads(), 1);
  EXPECT_EQ(ThreadPool(3).num_threads(), 3);
  EXPECT_GE(ThreadPool(0).num_threads(), 1);
  EXPECT_EQ(ThreadPool(100000).num_threads(), ThreadPool::kMaxThreads);
}

TEST(ThreadPoolTest, EveryIndexRunsExactlyOnce) {
  for (int threads : {1, 2, 5}) {
    ThreadPool pool(threads);
    for (size_t n : {size_t{0}, size_t{1}, size_t{7}, size_t{1000}}) {
      std::vector<std::atomic<int>> hits(n);
      pool.ParallelFor(n, [&](size_t i) { hits[i].fetch_add(1); });
      for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i].load(), 1) << threads << " " << n;
    }
  }
}

TEST(ThreadPoolTest, ConcurrentCallersAreSerialisedAndComplete) {
  ThreadPool pool(3);
  std::atomic<long> sum{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) {
        pool.ParallelFor(100, [&](size_t i) { sum.fetch_add(static_cast<long>(i)); });
      }
    });
  }
  for (auto& t : callers) t.join();
  EXPECT_EQ(sum.load(), 4L * 50 * 4950);
}

// More threads than cores: workers often arrive after their loop's caller
// has claimed every index (they must then skip it, not run a stale loop),
// and loops follow each other both within a worker's polling window and
// after it has gone to sleep.
TEST(ThreadPoolTest, OversubscribedPoolsRunEveryIndexOnce) {
  constexpr int kPools = 6;
  constexpr int kLoops = 300;
  std::vector<std::thread> callers;
  std::vector<std::atomic<long>> sums(kPools);
  std::vector<int> bad(kPools, 0);
  for (int p = 0; p < kPools; ++p) {
    callers.emplace_back([&, p] {
      ThreadPool pool(4);
      for (int rep = 0; rep < kLoops; ++rep) {
        const size_t n = 1 + static_cast<size_t>(rep % 9);
        std::vector<std::atomic<int>> hits(n);
        pool.ParallelFor(n, [&](size_t i) {
          hits[i].fetch_add(1);
          sums[p].fetch_add(static_cast<long>(i));
        });
        for (size_t i = 0; i < n; ++i) {
          if (hits[i].load() != 1) ++bad[p];
        }
        if (rep % 50 == 49) {
          std::this_thread::sleep_for(std::chrono::microseconds(3 * ThreadPool::kSpinMicros));
        }
      }
    });
  }
  for (auto& t : callers) t.join();
  long want = 0;
  for (int rep = 0; rep < kLoops; ++rep) {
    const long n = 1 + rep % 9;
    want += n * (n - 1) / 2;
  }
  for (int p = 0; p < kPools; ++p) {
    EXPECT_EQ(bad[p], 0) << "pool " << p;
    EXPECT_EQ(sums[p].load(), want) << "pool " << p;
  }
}

TEST(ThreadPoolTest, NullPoolRunsInline) {
  std::vector<int> order;
  ParallelFor(nullptr, 4, [&](size_t i) { order.push_back(static_cast<int>(i)); });
  EXPECT_EQ(order, (std::vector<int>{0, 1, 2, 3}));
}

}  // namespace
}  // namespace kvtier::kernels
