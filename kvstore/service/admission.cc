#include "kvstore/service/admission.h"

#include <utility>

#include "absl/strings/str_format.h"

namespace kvtier::store {

InflightBytes::Grant::Grant(Grant&& other) noexcept
    : owner_(std::exchange(other.owner_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

InflightBytes::Grant& InflightBytes::Grant::operator=(Grant&& other) noexcept {
  if (this != &other) {
    if (owner_ != nullptr) owner_->Release(bytes_);
    owner_ = std::exchange(other.owner_, nullptr);
    bytes_ = std::exchange(other.bytes_, 0);
  }
  return *this;
}

InflightBytes::Grant::~Grant() {
  if (owner_ != nullptr) owner_->Release(bytes_);
}

absl::StatusOr<InflightBytes::Grant> InflightBytes::Acquire(uint64_t bytes,
                                                            absl::string_view what) {
  absl::MutexLock lock(&mu_);
  if (bytes > cap_bytes_ - held_bytes_) {
    ++refused_;
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%s: %d bytes do not fit in the server's in-flight budget (%d of %d bytes held; "
        "max_inflight_bytes); retry later or send smaller batches",
        what, bytes, held_bytes_, cap_bytes_));
  }
  held_bytes_ += bytes;
  return Grant(this, bytes);
}

void InflightBytes::Release(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  held_bytes_ -= bytes;
}

uint64_t InflightBytes::held_bytes() const {
  absl::MutexLock lock(&mu_);
  return held_bytes_;
}

uint64_t InflightBytes::refused() const {
  absl::MutexLock lock(&mu_);
  return refused_;
}

WaitingPool::WaitingPool(int threads, size_t max_queued) : max_queued_(max_queued) {
  threads_.reserve(threads);
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Loop(); });
}

WaitingPool::~WaitingPool() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  for (std::thread& t : threads_) t.join();
}

absl::Status WaitingPool::Submit(absl::AnyInvocable<void() &&> task) {
  absl::MutexLock lock(&mu_);
  if (queue_.size() >= max_queued_) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "%d data-plane requests already wait for a thread; retry later", queue_.size()));
  }
  queue_.push_back(std::move(task));
  return absl::OkStatus();
}

uint64_t WaitingPool::started() const {
  absl::MutexLock lock(&mu_);
  return started_;
}

void WaitingPool::Loop() {
  while (true) {
    absl::AnyInvocable<void() &&> task;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(this, &WaitingPool::HasTaskOrStopping));
      if (queue_.empty()) return;  // stopping, and nothing left to run
      task = std::move(queue_.front());
      queue_.pop_front();
      ++started_;
    }
    std::move(task)();
  }
}

}  // namespace kvtier::store
