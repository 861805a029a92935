#include "kernels/thread_pool.h"

#include <algorithm>

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
    ++generation_;
    busy_workers_ = static_cast<int>(workers_.size());
  }
  Drain(loop);
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](int* busy) { return *busy == 0; }, &busy_workers_));
  loop_ = nullptr;
}

void ThreadPool::WorkerMain() {
  // A worker takes part in every loop: the caller waits for all of them, so
  // a generation can never be skipped.
  struct Wake {
    ThreadPool* pool;
    uint64_t seen;
  };
  Wake wake{this, 0};
  for (;;) {
    Loop* loop;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](Wake* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
            return w->pool->stop_ || w->pool->generation_ != w->seen;
          },
          &wake));
      if (stop_) return;
      wake.seen = generation_;
      loop = loop_;
    }
    Drain(*loop);
    absl::MutexLock lock(&mu_);
    --busy_workers_;
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
