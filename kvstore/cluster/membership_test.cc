#include "kvstore/cluster/membership.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace kvtier::cluster {
namespace {

using ::testing::HasSubstr;

v1::Member MakeMember(const std::string& id, const std::string& address, v1::MemberState state) {
  v1::Member member;
  member.set_id(id);
  member.set_address(address);
  member.set_state(state);
  member.set_ram_capacity_bytes(1ull << 30);
  member.set_disk_capacity_bytes(1ull << 40);
  member.set_started_unix_ms(1700000000000);
  return member;
}

std::vector<std::string> Ids(const MemberView& view) {
  std::vector<std::string> ids;
  for (const v1::Member& member : view.members) ids.push_back(member.id());
  return ids;
}

TEST(ValidateMemberTest, AcceptsAValidMember) {
  EXPECT_TRUE(ValidateMember(MakeMember("node-1.a_B", "10.0.0.1:7000", v1::MEMBER_UP)).ok());
  EXPECT_TRUE(ValidateMember(MakeMember(std::string(64, 'x'), "h:1", v1::MEMBER_DOWN)).ok());
  EXPECT_TRUE(ValidateMember(MakeMember("n", "[::1]:65535", v1::MEMBER_JOINING)).ok());
  std::string long_host(255 - 5, 'h');
  EXPECT_TRUE(ValidateMember(MakeMember("n", long_host + ":7000", v1::MEMBER_UP)).ok());
}

TEST(ValidateMemberTest, RejectsBadIds) {
  for (const std::string& id : {std::string(), std::string(65, 'x'), std::string("a/b"),
                                std::string("a b"), std::string("n\xc3\xa9")}) {
    absl::Status status = ValidateMember(MakeMember(id, "h:1", v1::MEMBER_UP));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_THAT(status.message(), HasSubstr("member id")) << id;
  }
}

TEST(ValidateMemberTest, RejectsBadAddresses) {
  std::string long_host(255 - 4, 'h');
  for (const std::string& address :
       {std::string(), std::string("host"), std::string(":7000"), std::string("host:"),
        std::string("host:0"), std::string("host:65536"), std::string("host:70a"),
        std::string("host:+80"), long_host + ":7000"}) {
    absl::Status status = ValidateMember(MakeMember("n", address, v1::MEMBER_UP));
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << address;
    EXPECT_THAT(status.message(), HasSubstr("address")) << address;
  }
}

TEST(ValidateMemberTest, RejectsUnspecifiedAndUnknownStates) {
  absl::Status status = ValidateMember(MakeMember("n", "h:1", v1::MEMBER_STATE_UNSPECIFIED));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("state 0"));
  status = ValidateMember(MakeMember("n", "h:1", static_cast<v1::MemberState>(9)));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(status.message(), HasSubstr("state 9"));
}

TEST(MemberViewTest, FindsByIdInASortedView) {
  MemberView view;
  view.members = {MakeMember("a", "h:1", v1::MEMBER_UP), MakeMember("c", "h:3", v1::MEMBER_UP)};
  ASSERT_NE(view.Find("a"), nullptr);
  EXPECT_EQ(view.Find("a")->address(), "h:1");
  ASSERT_NE(view.Find("c"), nullptr);
  EXPECT_EQ(view.Find("c")->address(), "h:3");
  EXPECT_EQ(view.Find("b"), nullptr);
  EXPECT_EQ(view.Find(""), nullptr);
  EXPECT_EQ(view.Find("d"), nullptr);
}

TEST(StaticMembershipTest, SortsTheMembersAndKeepsEveryField) {
  const v1::Member b = MakeMember("b", "10.0.0.2:7000", v1::MEMBER_UP);
  const v1::Member a = MakeMember("a", "10.0.0.1:7000", v1::MEMBER_JOINING);
  auto membership = StartStaticMembership({b, a}, "a");
  ASSERT_TRUE(membership.ok()) << membership.status();
  EXPECT_EQ((*membership)->self_id(), "a");
  std::shared_ptr<const MemberView> view = (*membership)->View();
  ASSERT_NE(view, nullptr);
  EXPECT_EQ(view->revision, 0);
  ASSERT_EQ(Ids(*view), (std::vector<std::string>{"a", "b"}));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(view->members[0], a));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(view->members[1], b));
}

TEST(StaticMembershipTest, RejectsInvalidDuplicateOrMissingSelf) {
  const v1::Member a = MakeMember("a", "h:1", v1::MEMBER_UP);
  auto invalid = StartStaticMembership({a, MakeMember("b", "nope", v1::MEMBER_UP)}, "a");
  EXPECT_EQ(invalid.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(invalid.status().message(), HasSubstr("address"));

  auto duplicate = StartStaticMembership({a, MakeMember("a", "h:2", v1::MEMBER_UP)}, "a");
  EXPECT_EQ(duplicate.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(duplicate.status().message(), HasSubstr("listed twice"));

  auto missing = StartStaticMembership({a}, "z");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(missing.status().message(), HasSubstr("not among the members"));

  auto empty = StartStaticMembership({}, "a");
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(StaticMembershipTest, SetSelfStateChangesOnlyOwnEntryAndNotifies) {
  auto membership = StartStaticMembership(
      {MakeMember("a", "h:1", v1::MEMBER_UP), MakeMember("b", "h:2", v1::MEMBER_UP)}, "b");
  ASSERT_TRUE(membership.ok()) << membership.status();
  std::shared_ptr<const MemberView> before = (*membership)->View();
  std::vector<std::shared_ptr<const MemberView>> seen;
  (*membership)->SetListener([&seen](std::shared_ptr<const MemberView> view) {
    seen.push_back(std::move(view));
  });

  ASSERT_TRUE((*membership)->SetSelfState(v1::MEMBER_DRAINING).ok());
  std::shared_ptr<const MemberView> after = (*membership)->View();
  EXPECT_EQ(after->Find("b")->state(), v1::MEMBER_DRAINING);
  EXPECT_EQ(after->Find("b")->address(), "h:2");
  EXPECT_EQ(after->Find("a")->state(), v1::MEMBER_UP);
  // Views are immutable: the earlier one is unchanged.
  EXPECT_EQ(before->Find("b")->state(), v1::MEMBER_UP);
  ASSERT_EQ(seen.size(), 1u);
  EXPECT_EQ(seen[0], after);
}

TEST(StaticMembershipTest, SetSelfStateRejectsStatesANodeCannotPublish) {
  auto membership = StartStaticMembership({MakeMember("a", "h:1", v1::MEMBER_UP)}, "a");
  ASSERT_TRUE(membership.ok()) << membership.status();
  EXPECT_EQ((*membership)->SetSelfState(v1::MEMBER_DOWN).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*membership)->SetSelfState(v1::MEMBER_STATE_UNSPECIFIED).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*membership)->View()->Find("a")->state(), v1::MEMBER_UP);
}

TEST(StaticMembershipTest, LeaveIsIdempotentAndEndsSetSelfState) {
  auto membership = StartStaticMembership({MakeMember("a", "h:1", v1::MEMBER_UP)}, "a");
  ASSERT_TRUE(membership.ok()) << membership.status();
  (*membership)->Leave();
  (*membership)->Leave();
  EXPECT_EQ((*membership)->SetSelfState(v1::MEMBER_DRAINING).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*membership)->View()->Find("a")->state(), v1::MEMBER_UP);
}

TEST(IsSelfStateTest, OnlyJoiningUpAndDraining) {
  EXPECT_TRUE(IsSelfState(v1::MEMBER_JOINING));
  EXPECT_TRUE(IsSelfState(v1::MEMBER_UP));
  EXPECT_TRUE(IsSelfState(v1::MEMBER_DRAINING));
  EXPECT_FALSE(IsSelfState(v1::MEMBER_DOWN));
  EXPECT_FALSE(IsSelfState(v1::MEMBER_STATE_UNSPECIFIED));
}

}  // namespace
}  // namespace kvtier::cluster
