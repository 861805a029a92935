// ThreadPool: the CPU kernels' bounded set of worker threads.
//
// A pool runs one parallel loop at a time: ParallelFor(n, fn) hands indices
// [0, n) to the workers and the calling thread, and returns when every fn(i)
// has returned. Callers own the pool and choose its size, so a process can
// give each worker thread its own pool or share one.
//
// Indices are claimed one at a time, and a loop never waits for a worker
// that has not joined it: the caller runs whatever is left, and once it has
// claimed the last index it waits only for the workers still running one.
// On a host whose cores other processes also want, a worker the scheduler
// leaves waiting therefore costs that loop its share of the parallelism,
// not a scheduling slice. Between loops a worker polls for the next one
// for a short while (kSpinMicros) before it sleeps, and a caller polls for
// the workers still running an index before it sleeps, so loops that
// follow each other closely (one per matrix product of a decode step) do
// not each pay thread wake-ups.
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
  // How long an idle worker polls for the next loop before it sleeps.
  static constexpr int kSpinMicros = 1000;

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
  // Polls `done` for up to kSpinMicros (the new loop for an idle worker, no
  // joined worker left for a caller); true once it holds.
  static bool SpinUntil(absl::FunctionRef<bool()> done);
  static void Drain(Loop& loop);

  // Serialises loops so that at most one is in flight.
  absl::Mutex run_mu_ ABSL_ACQUIRED_BEFORE(mu_);

  absl::Mutex mu_;
  // The loop workers may join; null once its caller has claimed every index.
  Loop* loop_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Workers inside Drain of the current loop. Changed under mu_; the
  // caller polls it without the lock before it waits on mu_.
  std::atomic<int> joined_{0};
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // Counts the loops opened. Written under mu_; idle workers poll it
  // without the lock.
  std::atomic<uint64_t> generation_{0};

  // Const after construction.
  std::vector<std::thread> workers_;
};

// Runs on `pool`, or inline on the calling thread when `pool` is nullptr.
void ParallelFor(ThreadPool* pool, size_t n, absl::FunctionRef<void(size_t)> fn);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_THREAD_POOL_H_
