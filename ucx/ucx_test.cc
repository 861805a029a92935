#include "ucx/context.h"

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "ucx/endpoint.h"
#include "ucx/worker.h"

namespace kvtier::ucx {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Sets an environment variable for one test and restores it after.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    had_ = std::getenv(name) != nullptr;
    if (value == nullptr) {
      unsetenv(name);
    } else {
      setenv(name, value, /*overwrite=*/1);
    }
  }
  ~ScopedEnv() {
    if (had_) {
      setenv(name_, old_.c_str(), 1);
    } else {
      unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(UcxContextTest, DefaultsApplyWhereTheEnvironmentIsSilent) {
  ScopedEnv tls("UCX_TLS", nullptr);
  ScopedEnv mutex("UCX_USE_MT_MUTEX", nullptr);
  absl::StatusOr<std::string> config = UcxContext::DescribeConfig(UcxOptions{});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(*config, HasSubstr("\nUCX_TLS=^tcp\n"));
  EXPECT_THAT(*config, HasSubstr("\nUCX_USE_MT_MUTEX=y\n"));
}

TEST(UcxContextTest, TheEnvironmentOverridesTheDefaults) {
  ScopedEnv tls("UCX_TLS", "posix,self");
  ScopedEnv mutex("UCX_USE_MT_MUTEX", "n");
  absl::StatusOr<std::string> config = UcxContext::DescribeConfig(UcxOptions{});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(*config, HasSubstr("\nUCX_TLS=posix,self\n"));
  EXPECT_THAT(*config, HasSubstr("\nUCX_USE_MT_MUTEX=n\n"));
  EXPECT_THAT(*config, Not(HasSubstr("UCX_TLS=^tcp")));
}

TEST(UcxContextTest, OptionsApplyWhereTheEnvironmentIsSilent) {
  ScopedEnv tls("UCX_TLS", nullptr);
  ScopedEnv mutex("UCX_USE_MT_MUTEX", nullptr);
  absl::StatusOr<std::string> config =
      UcxContext::DescribeConfig(UcxOptions{.transports = "posix,cma,self", .mutex_locks = false});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_THAT(*config, HasSubstr("\nUCX_TLS=posix,cma,self\n"));
  EXPECT_THAT(*config, HasSubstr("\nUCX_USE_MT_MUTEX=n\n"));
}

TEST(UcxContextTest, BadOptionsAreRejectedBeforeUcxStarts) {
  for (const char* transports : {"", "tcp\nUCX_LOG_LEVEL=trace", "tcp posix", "tcp;rm"}) {
    const UcxOptions options{.transports = transports};
    EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument) << transports;
    EXPECT_EQ(UcxContext::Create(options).status().code(), absl::StatusCode::kInvalidArgument)
        << transports;
  }
  EXPECT_TRUE(UcxOptions{}.Validate().ok());
}

TEST(UcxContextTest, ABadSettingIsAnError) {
  ScopedEnv mutex("UCX_USE_MT_MUTEX", "perhaps");
  EXPECT_FALSE(UcxContext::DescribeConfig(UcxOptions{}).ok());
  EXPECT_FALSE(UcxContext::Create(UcxOptions{}).ok());
}

TEST(UcxContextTest, CreatesAWorkerWithTheDefaults) {
  ScopedEnv tls("UCX_TLS", nullptr);
  ScopedEnv mutex("UCX_USE_MT_MUTEX", nullptr);
  absl::StatusOr<std::unique_ptr<UcxContext>> context = UcxContext::Create(UcxOptions{});
  ASSERT_TRUE(context.ok()) << context.status();
  absl::StatusOr<std::unique_ptr<UcxWorker>> worker = UcxWorker::Create(**context);
  ASSERT_TRUE(worker.ok()) << worker.status();
  EXPECT_FALSE((*worker)->address().empty());
}

// Over shared memory no lane can detect peer failure, so Connect's first
// attempt (with detection) fails and it connects without. UCX reports that
// first failure as an error of its own; it must not reach the log, where
// every session open would show a UCX ERROR line that is not one.
TEST(UcxEndpointTest, ConnectingOverSharedMemoryLogsNoError) {
  ScopedEnv tls("UCX_TLS", "posix,sysv,cma");
  absl::StatusOr<std::unique_ptr<UcxContext>> context = UcxContext::Create(UcxOptions{});
  ASSERT_TRUE(context.ok()) << context.status();
  absl::StatusOr<std::unique_ptr<UcxWorker>> a = UcxWorker::Create(**context);
  absl::StatusOr<std::unique_ptr<UcxWorker>> b = UcxWorker::Create(**context);
  ASSERT_TRUE(a.ok() && b.ok());
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  absl::StatusOr<std::unique_ptr<UcxEndpoint>> endpoint =
      UcxEndpoint::Connect(a->get(), (*b)->address());
  const std::string out = ::testing::internal::GetCapturedStdout();
  const std::string err = ::testing::internal::GetCapturedStderr();
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  EXPECT_THAT(out, Not(HasSubstr("ERROR")));
  EXPECT_THAT(err, Not(HasSubstr("ERROR")));
  endpoint->reset();
}

// Close waits for a Use in progress (a post on the endpoint must never meet
// another thread's close), and every later use is refused.
TEST(UcxEndpointTest, CloseWaitsForAUseInProgressAndLaterUsesAreRefused) {
  absl::StatusOr<std::unique_ptr<UcxContext>> context = UcxContext::Create(UcxOptions{});
  ASSERT_TRUE(context.ok()) << context.status();
  absl::StatusOr<std::unique_ptr<UcxWorker>> a = UcxWorker::Create(**context);
  absl::StatusOr<std::unique_ptr<UcxWorker>> b = UcxWorker::Create(**context);
  ASSERT_TRUE(a.ok() && b.ok());
  UcxProgressThread progress_b(b->get());
  absl::StatusOr<std::unique_ptr<UcxEndpoint>> endpoint =
      UcxEndpoint::Connect(a->get(), (*b)->address());
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  ASSERT_TRUE((*endpoint)->Flush(absl::Now() + absl::Seconds(10)).ok());

  absl::Notification inside, closed;
  std::atomic<bool> open_throughout{false};
  std::thread user([&] {
    absl::Status used = (*endpoint)->Use([&](ucp_ep_h ep) {
      inside.Notify();
      absl::SleepFor(absl::Milliseconds(200));
      open_throughout = ep != nullptr && !closed.HasBeenNotified();
      return absl::OkStatus();
    });
    EXPECT_TRUE(used.ok()) << used;
  });
  inside.WaitForNotification();
  std::thread closer([&] {
    (*endpoint)->Close();
    closed.Notify();
  });
  user.join();
  closer.join();
  EXPECT_TRUE(open_throughout);
  EXPECT_TRUE((*endpoint)->failed());
  EXPECT_EQ((*endpoint)->Use([](ucp_ep_h) { return absl::OkStatus(); }).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ((*endpoint)->Flush(absl::Now() + absl::Seconds(1)).code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ((*endpoint)->UnpackKey("x").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*endpoint)->AmTransport(), "");
  (*endpoint)->Close();  // idempotent
}


}  // namespace
}  // namespace kvtier::ucx
