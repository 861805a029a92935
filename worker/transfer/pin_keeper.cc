#include "worker/transfer/pin_keeper.h"

#include <utility>

#include "common/log.h"

namespace kvtier::worker {

PinKeeper::PinKeeper(PageTransferQueue* transfers, uint64_t ttl_ms, absl::Duration period,
                     absl::Duration deadline)
    : transfers_(transfers), ttl_ms_(ttl_ms), period_(period), deadline_(deadline) {
  thread_ = std::thread([this] { Loop(); });
}

PinKeeper::~PinKeeper() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void PinKeeper::Keep(const std::shared_ptr<SequencePin>& pin) {
  absl::MutexLock lock(&mu_);
  pins_.push_back(pin);
}

uint64_t PinKeeper::extensions() const {
  absl::MutexLock lock(&mu_);
  return extensions_;
}

void PinKeeper::Loop() {
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stop_), period_)) return;
    }
    ExtendNow();
  }
}

void PinKeeper::ExtendNow() {
  std::vector<std::shared_ptr<SequencePin>> live;
  {
    absl::MutexLock lock(&mu_);
    std::vector<std::weak_ptr<SequencePin>> kept;
    for (std::weak_ptr<SequencePin>& weak : pins_) {
      std::shared_ptr<SequencePin> pin = weak.lock();
      if (pin == nullptr) continue;
      bool released = false;
      {
        absl::MutexLock pin_lock(&pin->mu);
        released = pin->released;
      }
      if (released) continue;
      kept.push_back(pin);
      live.push_back(std::move(pin));
    }
    pins_.swap(kept);
  }
  const uint64_t ttl_ms = ttl_ms_;
  std::vector<TransferId> submitted;
  for (std::shared_ptr<SequencePin>& pin : live) {
    PageTransferQueue::Work work = [pin, ttl_ms](PageStoreBackend* backend) {
      absl::MutexLock lock(&pin->mu);
      if (pin->released || pin->lost || pin->pin_id.empty()) return TransferResult{};
      absl::StatusOr<std::string> id = backend->Pin({}, ttl_ms, pin->pin_id);
      if (absl::IsNotFound(id.status())) pin->lost = true;
      return TransferResult{id.status(), {}};
    };
    absl::StatusOr<TransferId> id =
        transfers_->Submit("pin extension", 0, deadline_, std::move(work));
    if (!id.ok()) {
      // A full window: the next round tries again, well inside the TTL.
      KVTIER_LOG(INFO) << "pin extension not submitted: " << id.status();
      continue;
    }
    submitted.push_back(*id);
    absl::MutexLock lock(&mu_);
    ++extensions_;
  }
  // Waited for (each at most its deadline): an abandoned transfer that has
  // not started yet would never run.
  for (TransferId id : submitted) transfers_->Wait(id);
}

}  // namespace kvtier::worker
