#include "placement/placement.h"

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::placement {
namespace {

using ::testing::ElementsAre;

v1::Member MakeMember(const std::string& id, v1::MemberState state = v1::MEMBER_UP) {
  v1::Member member;
  member.set_id(id);
  member.set_address(id + ":50051");
  member.set_state(state);
  return member;
}

Hash128 NthHash(uint64_t i) {
  return KeyChain::Next(Hash128{0x1234, i}, std::vector<uint32_t>{static_cast<uint32_t>(i)}, {});
}

// The owners by definition: every up member sorted by descending score.
std::vector<std::string> BruteForceOwners(const std::vector<std::string>& ids, const Hash128& hash,
                                          size_t count) {
  std::vector<std::string> sorted = ids;
  std::sort(sorted.begin(), sorted.end(), [&](const std::string& a, const std::string& b) {
    return RendezvousScore(a, hash) > RendezvousScore(b, hash);
  });
  sorted.resize(std::min(count, sorted.size()));
  return sorted;
}

std::vector<std::string> OwnerIds(const Placement& placement, const Hash128& hash, size_t count,
                                  std::string_view prefer = {}) {
  std::vector<std::string> ids;
  for (size_t i : placement.Owners(hash, count, prefer)) ids.push_back(placement.member(i).id());
  return ids;
}

TEST(PlacementTest, OwnersAreTheHighestScoringUpMembers) {
  const std::vector<std::string> ids = {"a", "b", "c", "d", "e"};
  std::vector<v1::Member> members;
  for (const std::string& id : ids) members.push_back(MakeMember(id));
  const Placement placement(members);
  for (uint64_t i = 0; i < 200; ++i) {
    const Hash128 hash = NthHash(i);
    EXPECT_EQ(OwnerIds(placement, hash, 2), BruteForceOwners(ids, hash, 2)) << i;
    EXPECT_EQ(OwnerIds(placement, hash, 5), BruteForceOwners(ids, hash, 5)) << i;
  }
}

TEST(PlacementTest, OnlyUpMembersOwnAndOthersAreListed) {
  const Placement placement({MakeMember("a"), MakeMember("b", v1::MEMBER_DOWN),
                             MakeMember("c", v1::MEMBER_DRAINING),
                             MakeMember("d", v1::MEMBER_JOINING), MakeMember("e")});
  ASSERT_EQ(placement.size(), 2u);
  EXPECT_EQ(placement.member(0).id(), "a");
  EXPECT_EQ(placement.member(1).id(), "e");
  ASSERT_EQ(placement.others().size(), 2u);
  EXPECT_EQ(placement.others()[0].id(), "c");
  EXPECT_EQ(placement.others()[1].id(), "d");
  for (uint64_t i = 0; i < 50; ++i) {
    const std::vector<std::string> owners = OwnerIds(placement, NthHash(i), 3);
    EXPECT_EQ(owners.size(), 2u);
    EXPECT_EQ(owners, BruteForceOwners({"a", "e"}, NthHash(i), 3));
  }
}

TEST(PlacementTest, NoUpMemberMeansNoOwner) {
  const Placement placement({MakeMember("a", v1::MEMBER_DOWN)});
  EXPECT_TRUE(placement.Owners(NthHash(1), 2).empty());
  EXPECT_TRUE(placement.Owners(NthHash(1), 0).empty());
}

TEST(PlacementTest, ALeavingMemberMovesOnlyThePagesItHeld) {
  std::vector<v1::Member> five;
  for (const char* id : {"n1", "n2", "n3", "n4", "n5"}) five.push_back(MakeMember(id));
  std::vector<v1::Member> four = five;
  four[2].set_state(v1::MEMBER_DOWN);  // n3 leaves
  const Placement before(five);
  const Placement after(four);
  int moved = 0;
  for (uint64_t i = 0; i < 2000; ++i) {
    const Hash128 hash = NthHash(i);
    std::vector<std::string> old_owners = OwnerIds(before, hash, 2);
    const std::vector<std::string> new_owners = OwnerIds(after, hash, 2);
    if (std::find(old_owners.begin(), old_owners.end(), "n3") == old_owners.end()) {
      EXPECT_EQ(new_owners, old_owners) << i;
    } else {
      ++moved;
      // The survivor keeps its rank order; the next member fills in.
      old_owners.erase(std::find(old_owners.begin(), old_owners.end(), "n3"));
      EXPECT_EQ(new_owners[0], old_owners[0]) << i;
    }
  }
  EXPECT_GT(moved, 0);
}

TEST(PlacementTest, PagesSpreadOverMembers) {
  std::vector<v1::Member> members;
  for (const char* id : {"x", "y", "z"}) members.push_back(MakeMember(id));
  const Placement placement(members);
  std::map<std::string, int> primaries;
  constexpr int kPages = 30000;
  for (uint64_t i = 0; i < kPages; ++i) ++primaries[OwnerIds(placement, NthHash(i), 1)[0]];
  ASSERT_EQ(primaries.size(), 3u);
  for (const auto& [id, count] : primaries) {
    // 10,000 expected each; a 5-sigma band of the binomial is +-408.
    EXPECT_GT(count, 9500) << id;
    EXPECT_LT(count, 10500) << id;
  }
}

TEST(PlacementTest, PreferredMemberComesFirst) {
  const Placement placement({MakeMember("a"), MakeMember("b"), MakeMember("c")});
  for (uint64_t i = 0; i < 50; ++i) {
    const Hash128 hash = NthHash(i);
    const std::vector<std::string> owners = OwnerIds(placement, hash, 2, "c");
    ASSERT_EQ(owners.size(), 2u);
    EXPECT_EQ(owners[0], "c");
    EXPECT_EQ(owners[1], BruteForceOwners({"a", "b"}, hash, 1)[0]);
  }
  // An unknown or non-up preference changes nothing.
  EXPECT_EQ(OwnerIds(placement, NthHash(7), 2, "zz"), BruteForceOwners({"a", "b", "c"}, NthHash(7), 2));
}

TEST(PlacementTest, ScoresAreFixedFunctionsOfIdAndHash) {
  // Every client and node must agree across builds and machines: the score
  // is XXH3-64 of the canonical hash with XXH3-64(id) as its seed. The
  // value was computed with libxxhash directly from those bytes.
  EXPECT_EQ(RendezvousScore("node-0", Hash128{.hi = 1, .lo = 2}), 1990363727095230683ULL);
  EXPECT_EQ(RendezvousScore("a", Hash128{1, 2}), RendezvousScore("a", Hash128{1, 2}));
  EXPECT_NE(RendezvousScore("a", Hash128{1, 2}), RendezvousScore("b", Hash128{1, 2}));
  EXPECT_NE(RendezvousScore("a", Hash128{1, 2}), RendezvousScore("a", Hash128{2, 1}));
  const Placement placement({MakeMember("only")});
  EXPECT_THAT(placement.Owners(NthHash(3), 2), ElementsAre(0u));
}

}  // namespace
}  // namespace kvtier::placement
