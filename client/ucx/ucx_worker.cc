#include "client/ucx/ucx_worker.h"

#include <poll.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>

#include "absl/strings/str_cat.h"
#include "client/ucx/ucx_status.h"
#include "common/status_macros.h"

namespace kvtier::ucx {

namespace {

struct ConfigRelease {
  void operator()(ucp_config_t* config) const { ucp_config_release(config); }
};
using ConfigPtr = std::unique_ptr<ucp_config_t, ConfigRelease>;

// UCX's configuration from the environment, with kvtier's defaults for the
// settings the environment leaves to UCX.
absl::StatusOr<ConfigPtr> ReadConfig() {
  ucp_config_t* raw = nullptr;
  RETURN_IF_ERROR(FromUcsStatus(ucp_config_read(nullptr, nullptr, &raw), "ucp_config_read"));
  ConfigPtr config(raw);
  struct Default {
    const char* name;  // without the UCX_ prefix
    const char* value;
  };
  constexpr Default kDefaults[] = {
      // UCX's tcp transport only where UCX_TLS asks for it: StoreClient's
      // automatic mode sends bytes inline where UCX would have only TCP
      // (measured faster, kvstore/DATA_PLANE.md), and with TCP in the set an
      // endpoint to a peer on this host picks TCP over shared memory, whose
      // wireup makes UCX 1.13 abort a process whose peer exits mid-wireup.
      {"TLS", "^tcp"},
      // Every worker is shared by its callers and a progress thread. UCX's
      // default lock for that is a spinlock: a holder preempted on a busy
      // host left the other thread spinning out its time slice (half of all
      // client CPU and p99 of 7-12 ms with 8 clients on 2 cores).
      {"USE_MT_MUTEX", "y"},
  };
  for (const Default& setting : kDefaults) {
    if (std::getenv(absl::StrCat("UCX_", setting.name).c_str()) != nullptr) continue;
    RETURN_IF_ERROR(FromUcsStatus(ucp_config_modify(config.get(), setting.name, setting.value),
                                  absl::StrCat("ucp_config_modify(", setting.name, ")")));
  }
  return config;
}

}  // namespace

absl::StatusOr<std::string> UcxContext::DescribeConfig() {
  ASSIGN_OR_RETURN(ConfigPtr config, ReadConfig());
  char* text = nullptr;
  size_t length = 0;
  FILE* stream = open_memstream(&text, &length);
  if (stream == nullptr) return absl::InternalError("open_memstream failed");
  ucp_config_print(config.get(), stream, nullptr, UCS_CONFIG_PRINT_CONFIG);
  std::fclose(stream);
  std::string described(text, length);
  std::free(text);
  return described;
}

absl::StatusOr<std::unique_ptr<UcxContext>> UcxContext::Create() {
  ASSIGN_OR_RETURN(ConfigPtr config, ReadConfig());
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_TAG | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 1;
  ucp_context_h context = nullptr;
  RETURN_IF_ERROR(FromUcsStatus(ucp_init(&params, config.get(), &context), "ucp_init"));
  return std::unique_ptr<UcxContext>(new UcxContext(context));
}

UcxContext::~UcxContext() { ucp_cleanup(context_); }

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

UcxProgressThread::UcxProgressThread(UcxWorker* worker, std::function<void()> on_idle,
                                     int idle_period_ms, absl::Duration spin)
    : worker_(worker),
      on_idle_(std::move(on_idle)),
      idle_period_ms_(idle_period_ms),
      spin_(absl::ToChronoMicroseconds(spin)) {
  thread_ = std::thread([this] { Loop(); });
}

UcxProgressThread::~UcxProgressThread() {
  stop_.store(true, std::memory_order_relaxed);
  // The loop sleeps at most idle_period_ms; signalling the worker wakes it now.
  ucp_worker_signal(worker_->get());
  thread_.join();
}

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
    worker_->WaitForEvents(idle_period_ms_);
  }
}

}  // namespace kvtier::ucx
