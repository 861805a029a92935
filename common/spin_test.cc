// AdaptiveSpin, SpinGate and SpinUntilReadable: who polls, for how long.
#include "common/spin.h"

#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier {
namespace {

using std::chrono::microseconds;
using std::chrono::milliseconds;

TEST(AdaptiveSpinTest, PollsUntilEventsComeFurtherApartThanItsLimit) {
  AdaptiveSpin spin(microseconds(500));
  EXPECT_EQ(spin.budget(), microseconds(500));  // a new thread polls
  spin.OnGap(microseconds(20));
  EXPECT_EQ(spin.budget(), microseconds(500));
  spin.OnGap(milliseconds(17));  // a worker's next decode step
  EXPECT_EQ(spin.budget(), microseconds(0));
}

TEST(AdaptiveSpinTest, AStreamOfCloseEventsBringsPollingBack) {
  AdaptiveSpin spin(microseconds(500));
  spin.OnGap(milliseconds(17));  // mean 4250 us
  ASSERT_EQ(spin.budget(), microseconds(0));
  // Each 20 us gap takes a quarter of the distance: 3192, 2399, 1804, 1358,
  // 1023, 772, 584, then 443 us, below the limit.
  for (int i = 0; i < 7; ++i) {
    spin.OnGap(microseconds(20));
    EXPECT_EQ(spin.budget(), microseconds(0)) << i;
  }
  spin.OnGap(microseconds(20));
  EXPECT_EQ(spin.budget(), microseconds(500));
}

TEST(AdaptiveSpinTest, ZeroLimitNeverPolls) {
  AdaptiveSpin spin(microseconds(0));
  EXPECT_EQ(spin.budget(), microseconds(0));
  spin.OnGap(microseconds(1));
  EXPECT_EQ(spin.budget(), microseconds(0));
}

TEST(SpinGateTest, AdmitsItsBoundOfPollersAtOnce) {
  SpinGate gate(2);
  {
    SpinGate::Pass a(gate);
    SpinGate::Pass b(gate);
    SpinGate::Pass c(gate);
    EXPECT_TRUE(a.may_spin());
    EXPECT_TRUE(b.may_spin());
    EXPECT_FALSE(c.may_spin());
  }
  // Passes that ended give their places back.
  SpinGate::Pass d(gate);
  EXPECT_TRUE(d.may_spin());
  EXPECT_GE(SpinGate::HalfTheCores(), 1);
}

TEST(SpinUntilReadableTest, TellsWhetherBytesCameWithinTheBudget) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  EXPECT_FALSE(SpinUntilReadable(fds[0], absl::Microseconds(100)));
  ASSERT_EQ(write(fds[1], "x", 1), 1);
  EXPECT_TRUE(SpinUntilReadable(fds[0], absl::ZeroDuration()));
  char byte;
  ASSERT_EQ(read(fds[0], &byte, 1), 1);
  // A closed peer makes it readable too: the read then tells.
  close(fds[1]);
  EXPECT_TRUE(SpinUntilReadable(fds[0], absl::Microseconds(100)));
  close(fds[0]);
}

}  // namespace
}  // namespace kvtier
