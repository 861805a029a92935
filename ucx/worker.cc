#include "ucx/worker.h"

#include <poll.h>

#include <chrono>
#include <functional>

#include "common/status_macros.h"
#include "ucx/status.h"

namespace kvtier::ucx {

absl::StatusOr<std::unique_ptr<UcxWorker>> UcxWorker::Create(const UcxContext& context) {
  ucp_worker_params_t params{};
  params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  params.thread_mode = UCS_THREAD_MODE_MULTI;
  ucp_worker_h worker = nullptr;
  RETURN_IF_ERROR(
      FromUcsStatus(ucp_worker_create(context.get(), &params, &worker), "ucp_worker_create"));
  ucp_address_t* raw = nullptr;
  size_t length = 0;
  ucs_status_t status = ucp_worker_get_address(worker, &raw, &length);
  if (status != UCS_OK) {
    ucp_worker_destroy(worker);
    return FromUcsStatus(status, "ucp_worker_get_address");
  }
  std::string address(reinterpret_cast<const char*>(raw), length);
  ucp_worker_release_address(worker, raw);
  int fd = -1;
  status = ucp_worker_get_efd(worker, &fd);
  if (status != UCS_OK) {
    ucp_worker_destroy(worker);
    return FromUcsStatus(status, "ucp_worker_get_efd");
  }
  return std::unique_ptr<UcxWorker>(new UcxWorker(worker, std::move(address), fd));
}

UcxWorker::~UcxWorker() { ucp_worker_destroy(worker_); }

void UcxWorker::WaitForEvents(int timeout_ms) {
  // UCS_ERR_BUSY: events arrived after the last progress; do not sleep.
  if (ucp_worker_arm(worker_) != UCS_OK) return;
  pollfd pfd{.fd = event_fd_, .events = POLLIN, .revents = 0};
  poll(&pfd, 1, timeout_ms);
}

size_t UcxWorker::DropUnexpectedTagged(size_t max_messages) {
  size_t dropped = 0;
  while (dropped < max_messages) {
    ucp_tag_recv_info_t info{};
    ucp_tag_message_h message =
        ucp_tag_probe_nb(worker_, /*tag=*/0, /*tag_mask=*/0, /*remove=*/1, &info);
    if (message == nullptr) break;
    ucp_request_param_t param{};
    ucs_status_ptr_t request =
        ucp_tag_msg_recv_nbx(worker_, sink_.data(), sink_.size(), message, &param);
    // A request still running (fragments to come, a rendezvous to refuse)
    // finishes inside UCX; freeing it asks for no completion.
    if (UCS_PTR_IS_PTR(request)) ucp_request_free(request);
    ++dropped;
    dropped_messages_.fetch_add(1, std::memory_order_relaxed);
    dropped_bytes_.fetch_add(info.length, std::memory_order_relaxed);
  }
  return dropped;
}

UcxProgressThread::UcxProgressThread(UcxWorker* worker, std::function<void()> on_idle,
                                     int idle_period_ms, absl::Duration spin,
                                     UnexpectedTagged unexpected)
    : worker_(worker),
      on_idle_(std::move(on_idle)),
      idle_period_ms_(idle_period_ms),
      spin_(absl::ToChronoMicroseconds(spin)),
      drop_unexpected_(unexpected == UnexpectedTagged::kDrop) {
  thread_ = std::thread([this] { Loop(); });
}

UcxProgressThread::~UcxProgressThread() {
  stop_.store(true, std::memory_order_relaxed);
  // The loop sleeps at most idle_period_ms; signalling the worker wakes it now.
  ucp_worker_signal(worker_->get());
  thread_.join();
}

namespace {
// Messages one round drops at most, so that a flood cannot keep the thread
// from progressing the worker (the next round drops more).
constexpr size_t kDropPerRound = 256;
}  // namespace

void UcxProgressThread::Loop() {
  AdaptiveSpin spin(spin_);
  auto last_idle = std::chrono::steady_clock::now();
  auto last_event = last_idle;
  bool polled_idle = false;  // a poll found nothing since last_event
  while (!stop_.load(std::memory_order_relaxed)) {
    while (!stop_.load(std::memory_order_relaxed)) {
      const unsigned events = worker_->Progress();
      const auto now = std::chrono::steady_clock::now();
      if (events != 0) {
        if (drop_unexpected_) worker_->DropUnexpectedTagged(kDropPerRound);
        if (polled_idle) spin.OnGap(now - last_event);
        polled_idle = false;
        last_event = now;
      } else {
        polled_idle = true;
        if (now - last_event >= spin.budget()) break;
      }
    }
    const auto now = std::chrono::steady_clock::now();
    if (on_idle_ && now - last_idle >= std::chrono::milliseconds(idle_period_ms_)) {
      on_idle_();
      last_idle = now;
    }
    if (drop_unexpected_) worker_->DropUnexpectedTagged(kDropPerRound);
    worker_->WaitForEvents(idle_period_ms_);
  }
}

}  // namespace kvtier::ucx
