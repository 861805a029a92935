// Waiting by polling instead of sleeping: for how long (AdaptiveSpin), how
// many threads of a process at once (SpinGate), and on a socket
// (SpinUntilReadable). A wakeup costs tens of microseconds on a busy host,
// more than a small request takes to serve, so the threads that serve and
// await requests poll for a while before they sleep; bounded, so that
// pollers never take the cores the work itself needs.
#ifndef KVTIER_COMMON_SPIN_H_
#define KVTIER_COMMON_SPIN_H_

#include <atomic>
#include <chrono>

#include "absl/time/time.h"

namespace kvtier {

// How long a serving thread keeps polling after its last event before it
// sleeps: up to `max` while events have lately come within `max` of each
// other (a stream of requests is then served without a wakeup each), not at
// all while they come further apart (occasional requests then cost no core:
// polling 500 us after each of a CPU-bound worker's few requests per step
// took a fifth of its decode rate on 2 cores). The gaps are averaged
// (weight 1/4 for the newest), starting from 0: a new thread polls.
class AdaptiveSpin {
 public:
  explicit AdaptiveSpin(std::chrono::microseconds max) : max_(max) {}
  // An event came `gap` after the previous one, with an idle poll between.
  void OnGap(std::chrono::nanoseconds gap) {
    mean_gap_us_ += (std::chrono::duration<double, std::micro>(gap).count() - mean_gap_us_) / 4;
  }
  std::chrono::microseconds budget() const {
    return mean_gap_us_ < static_cast<double>(max_.count()) ? max_
                                                            : std::chrono::microseconds(0);
  }

 private:
  const std::chrono::microseconds max_;
  double mean_gap_us_ = 0;
};

// Admits at most `allowed` pollers at once; the others sleep at once.
// Thread-safe.
class SpinGate {
 public:
  explicit SpinGate(int allowed) : allowed_(allowed) {}
  SpinGate(const SpinGate&) = delete;
  SpinGate& operator=(const SpinGate&) = delete;

  // Half the cores this process may run on, at least one.
  static int HalfTheCores();
  // This process's gate for callers awaiting replies (data-plane messages,
  // local lanes): HalfTheCores() of them.
  static SpinGate& Waiters();

  // Counts a waiter while it lives; may_spin() for the first `allowed`.
  class Pass {
   public:
    explicit Pass(SpinGate& gate)
        : gate_(gate), may_spin_(gate.waiting_.fetch_add(1, std::memory_order_relaxed) <
                                 gate.allowed_) {}
    ~Pass() { gate_.waiting_.fetch_sub(1, std::memory_order_relaxed); }
    Pass(const Pass&) = delete;
    Pass& operator=(const Pass&) = delete;
    bool may_spin() const { return may_spin_; }

   private:
    SpinGate& gate_;
    const bool may_spin_;
  };

 private:
  const int allowed_;
  std::atomic<int> waiting_{0};
};

// Polls `fd` without sleeping until it is readable (true) or `budget` has
// passed (false). The caller then reads, blocking if need be.
bool SpinUntilReadable(int fd, absl::Duration budget);

}  // namespace kvtier

#endif  // KVTIER_COMMON_SPIN_H_
