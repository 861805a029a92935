// StartEtcdMembership against a real etcd (etcd_test_util.h). Skipped where
// /usr/bin/etcd is not installed (Debian: etcd-server).
#include <signal.h>
#include <unistd.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "kvstore/cluster/etcd_client.h"
#include "kvstore/cluster/membership.h"
#include "testing/etcd_process.h"
#include "testing/server_process.h"

#ifndef KVTIER_ETCD_MEMBER_HELPER
#error "KVTIER_ETCD_MEMBER_HELPER must name the etcd_member_helper binary"
#endif

namespace kvtier::cluster {
namespace {

using ::google::protobuf::util::MessageDifferencer;
using testing::ChildProcess;
using ::testing::ElementsAre;
using testing::EtcdProcess;
using ::testing::HasSubstr;
using testing::TempDir;

constexpr char kPrefix[] = "/kvtier/test/members/";
// Waits for what must happen; generous, since no result depends on speed.
constexpr absl::Duration kPatience = absl::Seconds(60);

bool HaveEtcd() { return access(EtcdProcess::kBinary, X_OK) == 0; }

v1::Member MakeMember(const std::string& id, int port, v1::MemberState state) {
  v1::Member member;
  member.set_id(id);
  member.set_address(absl::StrCat("10.0.0.", port % 200, ":", port));
  member.set_state(state);
  member.set_ram_capacity_bytes(static_cast<uint64_t>(port) << 30);
  member.set_disk_capacity_bytes(static_cast<uint64_t>(port) << 40);
  member.set_started_unix_ms(1700000000000 + port);
  return member;
}

std::string Describe(const MemberView& view) {
  std::vector<std::string> parts;
  for (const v1::Member& member : view.members) {
    parts.push_back(absl::StrCat(member.id(), "=", v1::MemberState_Name(member.state())));
  }
  return absl::StrCat("revision ", view.revision, ": ", absl::StrJoin(parts, ", "));
}

std::vector<std::string> Ids(const MemberView& view) {
  std::vector<std::string> ids;
  for (const v1::Member& member : view.members) ids.push_back(member.id());
  return ids;
}

v1::MemberState StateOf(const MemberView& view, const std::string& id) {
  const v1::Member* member = view.Find(id);
  return member == nullptr ? v1::MEMBER_STATE_UNSPECIFIED : member->state();
}

// Polls `membership`'s view until `done` holds; the last view either way.
std::shared_ptr<const MemberView> AwaitView(const Membership& membership,
                                            const std::function<bool(const MemberView&)>& done) {
  const absl::Time deadline = absl::Now() + kPatience;
  std::shared_ptr<const MemberView> view = membership.View();
  while (!done(*view) && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
    view = membership.View();
  }
  return view;
}

std::shared_ptr<const MemberView> AwaitState(const Membership& membership, const std::string& id,
                                             v1::MemberState state) {
  return AwaitView(membership, [&](const MemberView& view) { return StateOf(view, id) == state; });
}

class EtcdMembershipTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!HaveEtcd()) GTEST_SKIP() << EtcdProcess::kBinary << " is absent (Debian: etcd-server)";
    absl::StatusOr<std::unique_ptr<EtcdProcess>> etcd = EtcdProcess::Start(dir_.path());
    ASSERT_TRUE(etcd.ok()) << etcd.status();
    etcd_ = *std::move(etcd);
  }

  EtcdMembershipOptions Options(absl::Duration ttl = absl::Seconds(10)) const {
    EtcdMembershipOptions options;
    options.endpoints = {etcd_->endpoint()};
    options.prefix = kPrefix;
    options.lease_ttl = ttl;
    return options;
  }

  std::unique_ptr<Membership> Start(const v1::Member& self,
                                    absl::Duration ttl = absl::Seconds(10)) {
    absl::StatusOr<std::unique_ptr<Membership>> membership =
        StartEtcdMembership(Options(ttl), self);
    EXPECT_TRUE(membership.ok()) << membership.status();
    return membership.ok() ? *std::move(membership) : nullptr;
  }

  // Writes into etcd directly, as a foreign or broken writer would.
  void PutRaw(const std::string& key, const std::string& value) {
    absl::StatusOr<std::unique_ptr<EtcdClient>> client =
        EtcdClient::Connect({etcd_->endpoint()}, absl::Seconds(10), absl::Seconds(10));
    ASSERT_TRUE(client.ok()) << client.status();
    absl::StatusOr<int64_t> revision = (*client)->Put(key, value, /*lease_id=*/0);
    ASSERT_TRUE(revision.ok()) << revision.status();
  }

  std::vector<std::string> KeysInEtcd() {
    absl::StatusOr<std::unique_ptr<EtcdClient>> client =
        EtcdClient::Connect({etcd_->endpoint()}, absl::Seconds(10), absl::Seconds(10));
    EXPECT_TRUE(client.ok()) << client.status();
    if (!client.ok()) return {};
    absl::StatusOr<EtcdRange> range = (*client)->RangePrefix(kPrefix);
    EXPECT_TRUE(range.ok()) << range.status();
    std::vector<std::string> keys;
    if (range.ok()) {
      for (const EtcdKeyValue& kv : range->kvs) keys.push_back(kv.key);
    }
    return keys;
  }

  TempDir dir_;
  std::unique_ptr<EtcdProcess> etcd_;
};

TEST_F(EtcdMembershipTest, TwoMembersSeeEachOtherWithEveryField) {
  const v1::Member b = MakeMember("node-b", 7002, v1::MEMBER_UP);
  const v1::Member a = MakeMember("node-a", 7001, v1::MEMBER_JOINING);
  std::unique_ptr<Membership> first = Start(b);
  ASSERT_NE(first, nullptr);
  EXPECT_EQ(first->self_id(), "node-b");
  ASSERT_THAT(Ids(*first->View()), ElementsAre("node-b"));
  const int64_t first_revision = first->View()->revision;
  EXPECT_GT(first_revision, 0);

  std::unique_ptr<Membership> second = Start(a);
  ASSERT_NE(second, nullptr);
  // Start read the view after registering: both are in it, sorted by id.
  std::shared_ptr<const MemberView> view = second->View();
  ASSERT_THAT(Ids(*view), ElementsAre("node-a", "node-b")) << Describe(*view);
  EXPECT_TRUE(MessageDifferencer::Equals(view->members[0], a)) << view->members[0].DebugString();
  EXPECT_TRUE(MessageDifferencer::Equals(view->members[1], b)) << view->members[1].DebugString();
  EXPECT_GT(view->revision, first_revision);

  view = AwaitView(*first, [](const MemberView& v) { return v.members.size() == 2; });
  ASSERT_THAT(Ids(*view), ElementsAre("node-a", "node-b")) << Describe(*view);
  EXPECT_TRUE(MessageDifferencer::Equals(view->members[0], a)) << view->members[0].DebugString();
  EXPECT_TRUE(MessageDifferencer::Equals(view->members[1], b)) << view->members[1].DebugString();
  EXPECT_EQ(view->revision, second->View()->revision);
}

TEST_F(EtcdMembershipTest, SetSelfStateIsSeenByTheOtherMemberAndItsListener) {
  // Declared first: the listener may run until `a` is destroyed.
  absl::Mutex mu;
  std::vector<std::shared_ptr<const MemberView>> heard;
  std::unique_ptr<Membership> a = Start(MakeMember("a", 7001, v1::MEMBER_UP));
  std::unique_ptr<Membership> b = Start(MakeMember("b", 7002, v1::MEMBER_UP));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(StateOf(*AwaitState(*a, "b", v1::MEMBER_UP), "b"), v1::MEMBER_UP);

  a->SetListener([&](std::shared_ptr<const MemberView> view) {
    absl::MutexLock lock(&mu);
    heard.push_back(std::move(view));
  });

  ASSERT_TRUE(b->SetSelfState(v1::MEMBER_DRAINING).ok());
  // SetSelfState returns once b's own view shows it.
  EXPECT_EQ(StateOf(*b->View(), "b"), v1::MEMBER_DRAINING);
  std::shared_ptr<const MemberView> view = AwaitState(*a, "b", v1::MEMBER_DRAINING);
  EXPECT_EQ(StateOf(*view, "b"), v1::MEMBER_DRAINING) << Describe(*view);
  EXPECT_EQ(StateOf(*view, "a"), v1::MEMBER_UP) << Describe(*view);
  EXPECT_EQ(view->Find("b")->address(), "10.0.0.2:7002");

  // The listener runs just after the view is published: wait for it.
  const absl::Time deadline = absl::Now() + kPatience;
  auto heard_draining = [&] {
    absl::MutexLock lock(&mu);
    return !heard.empty() && StateOf(*heard.back(), "b") == v1::MEMBER_DRAINING;
  };
  while (!heard_draining() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  a->SetListener(nullptr);  // no more views: `heard` is final
  ASSERT_FALSE(heard.empty());
  EXPECT_EQ(heard.back(), view);
  EXPECT_EQ(StateOf(*heard.back(), "b"), v1::MEMBER_DRAINING);
  for (size_t i = 1; i < heard.size(); ++i) EXPECT_GT(heard[i]->revision, heard[i - 1]->revision);
}

TEST_F(EtcdMembershipTest, SetSelfStateRejectsStatesANodeCannotPublish) {
  std::unique_ptr<Membership> a = Start(MakeMember("a", 7001, v1::MEMBER_UP));
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->SetSelfState(v1::MEMBER_DOWN).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a->SetSelfState(v1::MEMBER_STATE_UNSPECIFIED).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StateOf(*a->View(), "a"), v1::MEMBER_UP);
}

TEST_F(EtcdMembershipTest, LeaveRevokesTheRecordAndOthersSeeItDown) {
  // A TTL far beyond the wait: only the revoke can make b go down in time.
  std::unique_ptr<Membership> a = Start(MakeMember("a", 7001, v1::MEMBER_UP), absl::Seconds(300));
  std::unique_ptr<Membership> b = Start(MakeMember("b", 7002, v1::MEMBER_UP), absl::Seconds(300));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(StateOf(*AwaitState(*a, "b", v1::MEMBER_UP), "b"), v1::MEMBER_UP);

  b->Leave();
  std::shared_ptr<const MemberView> view = AwaitState(*a, "b", v1::MEMBER_DOWN);
  ASSERT_EQ(StateOf(*view, "b"), v1::MEMBER_DOWN) << Describe(*view);
  // Down members keep their last record otherwise.
  EXPECT_EQ(view->Find("b")->address(), "10.0.0.2:7002");
  EXPECT_EQ(view->Find("b")->started_unix_ms(), 1700000007002u);
  EXPECT_EQ(StateOf(*view, "a"), v1::MEMBER_UP);
  EXPECT_THAT(KeysInEtcd(), ElementsAre(std::string(kPrefix) + "a"));

  b->Leave();  // idempotent
  EXPECT_EQ(b->SetSelfState(v1::MEMBER_UP).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EtcdMembershipTest, FrozenMemberIsDownAfterItsLeaseExpiresAndReturnsWhenThawed) {
  std::unique_ptr<Membership> a = Start(MakeMember("a", 7001, v1::MEMBER_UP));
  ASSERT_NE(a, nullptr);
  absl::StatusOr<std::unique_ptr<ChildProcess>> spawned = ChildProcess::Spawn(
      {KVTIER_ETCD_MEMBER_HELPER, etcd_->endpoint(), kPrefix, "frozen", "10.0.0.9:7009", "2"},
      dir_.path() + "/helper.log", /*pipe_stdio=*/true);
  ASSERT_TRUE(spawned.ok()) << spawned.status();
  ChildProcess& helper = **spawned;
  absl::StatusOr<std::string> line = helper.ReadLine(kPatience);
  ASSERT_TRUE(line.ok()) << line.status();
  ASSERT_EQ(*line, "ready");
  std::shared_ptr<const MemberView> view = AwaitState(*a, "frozen", v1::MEMBER_UP);
  ASSERT_EQ(StateOf(*view, "frozen"), v1::MEMBER_UP) << Describe(*view);

  ASSERT_TRUE(helper.Signal(SIGSTOP).ok());
  view = AwaitState(*a, "frozen", v1::MEMBER_DOWN);
  EXPECT_EQ(StateOf(*view, "frozen"), v1::MEMBER_DOWN) << Describe(*view);
  EXPECT_EQ(StateOf(*view, "a"), v1::MEMBER_UP) << Describe(*view);

  // Thawed, it finds its lease gone and registers again.
  ASSERT_TRUE(helper.Signal(SIGCONT).ok());
  view = AwaitState(*a, "frozen", v1::MEMBER_UP);
  EXPECT_EQ(StateOf(*view, "frozen"), v1::MEMBER_UP) << Describe(*view);
  ASSERT_TRUE(helper.WriteLine("MEMBER_DRAINING").ok());
  line = helper.ReadLine(kPatience);
  ASSERT_TRUE(line.ok()) << line.status();
  EXPECT_EQ(*line, "ok");
  view = AwaitState(*a, "frozen", v1::MEMBER_DRAINING);
  EXPECT_EQ(StateOf(*view, "frozen"), v1::MEMBER_DRAINING) << Describe(*view);

  helper.CloseStdin();
  absl::StatusOr<int> code = helper.Wait(kPatience);
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST_F(EtcdMembershipTest, SurvivesAnEtcdRestart) {
  std::unique_ptr<Membership> a = Start(MakeMember("a", 7001, v1::MEMBER_UP));
  std::unique_ptr<Membership> b = Start(MakeMember("b", 7002, v1::MEMBER_UP));
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  ASSERT_EQ(StateOf(*AwaitState(*a, "b", v1::MEMBER_UP), "b"), v1::MEMBER_UP);
  const int64_t before = a->View()->revision;

  etcd_->Kill();
  absl::Status restarted = etcd_->Restart();
  ASSERT_TRUE(restarted.ok()) << restarted;

  // Calls fail until the channel reconnects; the caller retries.
  absl::Status set = b->SetSelfState(v1::MEMBER_DRAINING);
  for (const absl::Time deadline = absl::Now() + kPatience; !set.ok() && absl::Now() < deadline;) {
    absl::SleepFor(absl::Milliseconds(100));
    set = b->SetSelfState(v1::MEMBER_DRAINING);
  }
  ASSERT_TRUE(set.ok()) << set;
  std::shared_ptr<const MemberView> view = AwaitView(*a, [](const MemberView& v) {
    return StateOf(v, "a") == v1::MEMBER_UP && StateOf(v, "b") == v1::MEMBER_DRAINING;
  });
  EXPECT_THAT(Ids(*view), ElementsAre("a", "b")) << Describe(*view);
  EXPECT_EQ(StateOf(*view, "a"), v1::MEMBER_UP) << Describe(*view);
  EXPECT_EQ(StateOf(*view, "b"), v1::MEMBER_DRAINING) << Describe(*view);
  EXPECT_GT(view->revision, before);
  EXPECT_THAT(KeysInEtcd(), ElementsAre(std::string(kPrefix) + "a", std::string(kPrefix) + "b"));
}

TEST_F(EtcdMembershipTest, WhileEtcdIsDownCallsFailAndLeaveReturns) {
  EtcdMembershipOptions options = Options();
  options.connect_timeout = absl::Seconds(1);
  absl::StatusOr<std::unique_ptr<Membership>> a =
      StartEtcdMembership(options, MakeMember("a", 7001, v1::MEMBER_UP));
  ASSERT_TRUE(a.ok()) << a.status();
  etcd_->Kill();

  const absl::Status set = (*a)->SetSelfState(v1::MEMBER_DRAINING);
  EXPECT_TRUE(set.code() == absl::StatusCode::kUnavailable ||
              set.code() == absl::StatusCode::kDeadlineExceeded)
      << set;
  // The view stays as it was.
  EXPECT_THAT(Ids(*(*a)->View()), ElementsAre("a"));
  EXPECT_EQ(StateOf(*(*a)->View(), "a"), v1::MEMBER_UP);
  (*a)->Leave();  // must not hang on the dead endpoint
  EXPECT_EQ((*a)->SetSelfState(v1::MEMBER_UP).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(EtcdMembershipTest, RecordsThatAreNotValidMembersAreIgnored) {
  std::unique_ptr<Membership> a = Start(MakeMember("a", 7001, v1::MEMBER_UP));
  ASSERT_NE(a, nullptr);
  const std::string prefix = kPrefix;
  PutRaw(prefix + "junk", std::string("\xff\xfe\x01not a proto", 14));
  PutRaw(prefix + "impostor", MakeMember("someone-else", 7003, v1::MEMBER_UP).SerializeAsString());
  PutRaw(prefix + "bad",
         MakeMember("bad", 7004, static_cast<v1::MemberState>(9)).SerializeAsString());
  v1::Member no_address = MakeMember("no-address", 7005, v1::MEMBER_UP);
  no_address.clear_address();
  PutRaw(prefix + "no-address", no_address.SerializeAsString());
  PutRaw(prefix + "x/y", MakeMember("y", 7006, v1::MEMBER_UP).SerializeAsString());
  PutRaw(prefix + "empty", "");
  // Written last: once a shows it, the watch has passed every record above.
  PutRaw(prefix + "marker", MakeMember("marker", 7007, v1::MEMBER_UP).SerializeAsString());

  std::shared_ptr<const MemberView> view = AwaitState(*a, "marker", v1::MEMBER_UP);
  EXPECT_THAT(Ids(*view), ElementsAre("a", "marker")) << Describe(*view);

  // A member starting now reads the same records with Range.
  std::unique_ptr<Membership> b = Start(MakeMember("b", 7002, v1::MEMBER_UP));
  ASSERT_NE(b, nullptr);
  EXPECT_THAT(Ids(*b->View()), ElementsAre("a", "b", "marker")) << Describe(*b->View());
}

TEST_F(EtcdMembershipTest, TriesTheEndpointsInOrder) {
  absl::StatusOr<int> dead_port = testing::PickFreePort();
  ASSERT_TRUE(dead_port.ok()) << dead_port.status();
  EtcdMembershipOptions options = Options();
  options.endpoints = {absl::StrCat("127.0.0.1:", *dead_port), etcd_->endpoint()};
  absl::StatusOr<std::unique_ptr<Membership>> a =
      StartEtcdMembership(options, MakeMember("a", 7001, v1::MEMBER_UP));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_THAT(Ids(*(*a)->View()), ElementsAre("a"));
  ASSERT_TRUE((*a)->SetSelfState(v1::MEMBER_DRAINING).ok());
  EXPECT_EQ(StateOf(*(*a)->View(), "a"), v1::MEMBER_DRAINING);
}

// Needs no etcd: options are checked before connecting.
TEST(EtcdMembershipOptionsTest, BadOptionsAndSelvesAreInvalidArgument) {
  const v1::Member self = MakeMember("a", 7001, v1::MEMBER_UP);
  EtcdMembershipOptions valid;
  valid.endpoints = {"127.0.0.1:1"};
  struct Case {
    std::string name;
    std::function<void(EtcdMembershipOptions&, v1::Member&)> change;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"no endpoints", [](auto& o, auto&) { o.endpoints.clear(); }, "endpoints"},
      {"empty endpoint", [](auto& o, auto&) { o.endpoints = {""}; }, "endpoint"},
      {"relative prefix", [](auto& o, auto&) { o.prefix = "kvtier/"; }, "prefix"},
      {"open prefix", [](auto& o, auto&) { o.prefix = "/kvtier"; }, "prefix"},
      {"empty prefix", [](auto& o, auto&) { o.prefix = ""; }, "prefix"},
      {"ttl 1s", [](auto& o, auto&) { o.lease_ttl = absl::Seconds(1); }, "lease_ttl"},
      {"ttl 301s", [](auto& o, auto&) { o.lease_ttl = absl::Seconds(301); }, "lease_ttl"},
      {"ttl 2.5s", [](auto& o, auto&) { o.lease_ttl = absl::Milliseconds(2500); }, "lease_ttl"},
      {"no timeout", [](auto& o, auto&) { o.connect_timeout = absl::ZeroDuration(); },
       "connect_timeout"},
      {"bad id", [](auto&, auto& m) { m.set_id("a/b"); }, "member id"},
      {"bad address", [](auto&, auto& m) { m.set_address("nowhere"); }, "address"},
      {"self down", [](auto&, auto& m) { m.set_state(v1::MEMBER_DOWN); }, "MEMBER_DOWN"},
      {"self unspecified", [](auto&, auto& m) { m.set_state(v1::MEMBER_STATE_UNSPECIFIED); },
       "state"},
  };
  for (const Case& test_case : cases) {
    EtcdMembershipOptions options = valid;
    v1::Member member = self;
    test_case.change(options, member);
    absl::StatusOr<std::unique_ptr<Membership>> membership = StartEtcdMembership(options, member);
    EXPECT_EQ(membership.status().code(), absl::StatusCode::kInvalidArgument) << test_case.name;
    EXPECT_THAT(membership.status().message(), HasSubstr(test_case.message)) << test_case.name;
  }
  // The boundaries are allowed (UNAVAILABLE: nothing listens there).
  for (absl::Duration ttl : {absl::Seconds(2), absl::Seconds(300)}) {
    EtcdMembershipOptions options = valid;
    options.lease_ttl = ttl;
    options.connect_timeout = absl::Milliseconds(200);
    EXPECT_EQ(StartEtcdMembership(options, self).status().code(), absl::StatusCode::kUnavailable);
  }
}

TEST(EtcdMembershipOptionsTest, UnreachableEtcdIsUnavailableAfterTheTimeout) {
  absl::StatusOr<int> port = testing::PickFreePort();
  ASSERT_TRUE(port.ok()) << port.status();
  EtcdMembershipOptions options;
  options.endpoints = {absl::StrCat("127.0.0.1:", *port)};
  options.connect_timeout = absl::Milliseconds(500);
  const absl::Time start = absl::Now();
  absl::StatusOr<std::unique_ptr<Membership>> membership =
      StartEtcdMembership(options, MakeMember("a", 7001, v1::MEMBER_UP));
  EXPECT_EQ(membership.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(membership.status().message(), HasSubstr(options.endpoints[0]));
  // Bounded: it gave up rather than waiting forever.
  EXPECT_LT(absl::Now() - start, kPatience);
}

TEST(PrefixRangeEndTest, IncrementsTheLastByteThatCan) {
  EXPECT_EQ(PrefixRangeEnd("/kvtier/"), "/kvtier0");
  EXPECT_EQ(PrefixRangeEnd(std::string("a\xff", 2)), "b");
  EXPECT_EQ(PrefixRangeEnd(std::string("\xff\xff", 2)), std::string(1, '\0'));
}

}  // namespace
}  // namespace kvtier::cluster
