// Clock: the one source of time for leases, pin TTLs and latency figures, so
// tests can drive time by hand.
#ifndef KVTIER_COMMON_CLOCK_H_
#define KVTIER_COMMON_CLOCK_H_

#include <atomic>
#include <cstdint>

namespace kvtier {

class Clock {
 public:
  virtual ~Clock() = default;
  // Monotonic microseconds since an arbitrary epoch.
  virtual int64_t NowMicros() const = 0;
  int64_t NowMillis() const { return NowMicros() / 1000; }

  // The process-wide monotonic clock. Thread-safe; never destroyed.
  static Clock* Real();
};

// A clock that moves only when told to. Thread-safe.
class FakeClock : public Clock {
 public:
  explicit FakeClock(int64_t start_us = 1'000'000) : now_us_(start_us) {}
  int64_t NowMicros() const override { return now_us_.load(std::memory_order_acquire); }
  void AdvanceMicros(int64_t us) { now_us_.fetch_add(us, std::memory_order_acq_rel); }
  void AdvanceMillis(int64_t ms) { AdvanceMicros(ms * 1000); }

 private:
  std::atomic<int64_t> now_us_;
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_CLOCK_H_
