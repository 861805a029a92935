#include "kernels/thread_pool.h"

#include <sched.h>

#include <algorithm>
#include <chrono>

namespace kvtier::kernels {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  num_threads = std::clamp(num_threads, 1, kMaxThreads);
  workers_.reserve(num_threads - 1);
  for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this] { WorkerMain(); });
}

ThreadPool::~ThreadPool() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::Drain(Loop& loop) {
  for (;;) {
    const size_t i = loop.next.fetch_add(1, std::memory_order_relaxed);
    if (i >= loop.n) return;
    (*loop.fn)(i);
  }
}

bool ThreadPool::SpinUntil(absl::FunctionRef<bool()> done) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
    }
    if (std::chrono::steady_clock::now() >= deadline) return false;
    // Lets another runnable thread have this core while we wait.
    sched_yield();
  }
}

void ThreadPool::ParallelFor(size_t n, absl::FunctionRef<void(size_t)> fn) {
  if (n == 0) return;
  if (workers_.empty() || n == 1) {
    for (size_t i = 0; i < n; ++i) fn(i);
    return;
  }
  absl::MutexLock run_lock(&run_mu_);
  Loop loop;
  loop.n = n;
  loop.fn = &fn;
  {
    absl::MutexLock lock(&mu_);
    loop_ = &loop;
    generation_.fetch_add(1, std::memory_order_release);
  }
  Drain(loop);
  // Every index is claimed: close the loop to late workers and wait for
  // those still running an index (`loop` lives on this stack).
  {
    absl::MutexLock lock(&mu_);
    loop_ = nullptr;
  }
  if (SpinUntil([this] { return joined_.load(std::memory_order_acquire) == 0; })) return;
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](std::atomic<int>* joined) { return joined->load(std::memory_order_acquire) == 0; },
      &joined_));
}

void ThreadPool::WorkerMain() {
  struct Wake {
    ThreadPool* pool;
    uint64_t seen;
  };
  Wake wake{this, 0};
  for (;;) {
    SpinUntil([&] { return generation_.load(std::memory_order_acquire) != wake.seen; });
    Loop* loop;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Wake* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return w->pool->stop_ ||
                   w->pool->generation_.load(std::memory_order_relaxed) != w->seen;
          },
          &wake));
      if (stop_) return;
      wake.seen = generation_.load(std::memory_order_relaxed);
      // Null when the caller finished the loop before this worker came.
      loop = loop_;
      if (loop == nullptr) continue;
      joined_.fetch_add(1, std::memory_order_relaxed);
    }
    Drain(*loop);
    // Under mu_, so that a caller waiting in Await sees it; release, so that
    // one polling sees this worker's writes.
    absl::MutexLock lock(&mu_);
    joined_.fetch_sub(1, std::memory_order_release);
  }
}

void ParallelFor(ThreadPool* pool, size_t n, absl::FunctionRef<void(size_t)> fn) {
  if (pool == nullptr) {
    for (size_t i = 0; i < n; ++i) fn(i);
  } else {
    pool->ParallelFor(n, fn);
  }
}

}  // namespace kvtier::kernels
