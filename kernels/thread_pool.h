// ThreadPool: the CPU kernels' bounded set of worker threads.
//
// A pool runs one parallel loop at a time: ParallelFor(n, fn) hands indices
// [0, n) to the workers and the calling thread, and returns when every fn(i)
// has returned. Callers own the pool and choose its size, so a process can
// give each worker thread its own pool or share one.
//
// Thread-safety: ParallelFor may be called from several threads; the loops
// are serialised (one in flight). fn must not call ParallelFor on the same
// pool (it would deadlock) and must not throw.
//
//   kvtier::kernels::ThreadPool pool(/*num_threads=*/0);  // all cores
//   ComputeDigestsCpu(args, &pool);
#ifndef KVTIER_KERNELS_THREAD_POOL_H_
#define KVTIER_KERNELS_THREAD_POOL_H_

#include <atomic>
#include <cstddef>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/synchronization/mutex.h"

namespace kvtier::kernels {

class ThreadPool {
 public:
  // Largest thread count accepted; larger requests are clamped.
  static constexpr int kMaxThreads = 256;

  // `num_threads` counts the calling thread: 1 runs every loop inline with no
  // worker thread; 0 means std::thread::hardware_concurrency(); negative
  // values are treated as 0.
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();

  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int num_threads() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs fn(i) for every i in [0, n), in no particular order, and returns
  // when all have finished.
  void ParallelFor(size_t n, absl::FunctionRef<void(size_t)> fn);

 private:
  struct Loop {
    size_t n = 0;
    absl::FunctionRef<void(size_t)>* fn = nullptr;
    std::atomic<size_t> next{0};
  };

  void WorkerMain();
  static void Drain(Loop& loop);

  // Serialises loops so that at most one is in flight.
  absl::Mutex run_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  absl::Mutex mu_;
  Loop* loop_ ABSL_GUARDED_BY(mu_) = nullptr;
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int busy_workers_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  // Const after construction.
  std::vector<std::thread> workers_;
};

// Runs on `pool`, or inline on the calling thread when `pool` is nullptr.
void ParallelFor(ThreadPool* pool, size_t n, absl::FunctionRef<void(size_t)> fn);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_THREAD_POOL_H_
