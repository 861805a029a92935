// The replicator against a real store and a recording sender: which pages
// go where when a member joins, pinned ones at once and unpinned ones in
// the paced background pass, and a pass a newer view cuts short.
#include "kvstore/cluster/replicator.h"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "kvstore/core/store.h"
#include "placement/placement.h"
#include "testing/store_test_util.h"

namespace kvtier::cluster {
namespace {

using store::testing::Key;
using store::testing::PutPages;
using store::testing::TempDir;

v1::Member Up(const std::string& id) {
  v1::Member m;
  m.set_id(id);
  m.set_address(id + ":1");
  m.set_state(v1::MEMBER_UP);
  return m;
}

std::shared_ptr<const MemberView> ViewOf(const std::vector<std::string>& ids) {
  auto view = std::make_shared<MemberView>();
  for (const std::string& id : ids) view->members.push_back(Up(id));
  return view;
}

// Copies received, by target member: the page keys and whether pinned.
struct Received {
  absl::Mutex mu;
  std::map<std::string, std::map<uint64_t, bool>> pages ABSL_GUARDED_BY(mu);
};

class ReplicatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store::StoreOptions options;
    options.data_dir = dir_.path();
    options.ram.capacity_bytes = 16 << 20;
    store_ = *store::Store::Open(options);
    for (uint64_t n = 0; n < kPages; ++n) ASSERT_TRUE(PutPages(*store_, {Key(n)}).ok());
    // Pages 0..9 pinned.
    std::vector<PageKey> pinned;
    for (uint64_t n = 0; n < 10; ++n) pinned.push_back(Key(n));
    ASSERT_TRUE(store_->Pin(0, pinned, 600'000, store::PinId{}).ok());
  }

  std::unique_ptr<Replicator> Start(uint64_t unpinned_bytes_per_s, uint32_t batch_pages = 64) {
    ReplicatorOptions options;
    options.replicas = 2;
    options.batch_pages = batch_pages;
    options.unpinned_bytes_per_s = unpinned_bytes_per_s;
    options.send = [this](const v1::Member& to, const v1::ReplicaPutRequest& request) {
      absl::MutexLock lock(&received_.mu);
      for (int i = 0; i < request.pages_size(); ++i) {
        const uint64_t n = Hash128::FromCanonical(reinterpret_cast<const uint8_t*>(
                                                      request.pages(i).key().hash().data()))
                               .lo;
        received_.pages[to.id()][n] = request.pin_expiry_unix_ms(i) != 0;
      }
      return absl::OkStatus();
    };
    return std::make_unique<Replicator>(store_.get(), "a", ViewOf({"a", "b"}), options);
  }

  // The pages this node ("a") must copy to "c" when c joins {a, b}: those
  // a owned before and is the best former owner of, c owns after.
  static std::map<uint64_t, bool> ExpectedForC() {
    const std::vector<v1::Member> before = ViewOf({"a", "b"})->members;
    const std::vector<v1::Member> after = ViewOf({"a", "b", "c"})->members;
    const placement::Placement old_placement(before);
    const placement::Placement new_placement(after);
    std::map<uint64_t, bool> want;
    for (uint64_t n = 0; n < kPages; ++n) {
      const std::vector<size_t> old_owners = old_placement.Owners(Key(n).hash, 2);
      // With two members both own every page; "a" sends when it ranks first.
      if (old_placement.member(old_owners[0]).id() != "a") continue;
      for (size_t m : new_placement.Owners(Key(n).hash, 2)) {
        if (new_placement.member(m).id() == "c") want[n] = n < 10;
      }
    }
    return want;
  }

  static constexpr uint64_t kPages = 200;
  TempDir dir_;
  std::unique_ptr<store::Store> store_;
  Received received_;
};

TEST_F(ReplicatorTest, AJoinerGetsPinnedPagesAtOnceAndUnpinnedOnesInTheBackground) {
  std::unique_ptr<Replicator> replicator = Start(uint64_t{1} << 30);
  replicator->OnView(ViewOf({"a", "b", "c"}));
  ASSERT_TRUE(replicator->AwaitIdle(absl::Now() + absl::Seconds(30)));
  const std::map<uint64_t, bool> want = ExpectedForC();
  ASSERT_FALSE(want.empty());
  uint64_t unpinned = 0;
  for (const auto& [n, pinned] : want) unpinned += !pinned;
  ASSERT_GT(unpinned, 0u);
  {
    absl::MutexLock lock(&received_.mu);
    EXPECT_EQ(received_.pages["c"], want);
    EXPECT_EQ(received_.pages.size(), 1u);  // nothing for a or b
  }
  const ReplicatorStats stats = replicator->stats();
  EXPECT_EQ(stats.pages_copied, want.size());
  EXPECT_EQ(stats.unpinned_pages_copied, unpinned);
  EXPECT_EQ(stats.copy_failures, 0u);
  EXPECT_EQ(stats.passes_cut_short, 0u);
}

TEST_F(ReplicatorTest, WithoutARateOnlyPinnedPagesMove) {
  std::unique_ptr<Replicator> replicator = Start(0);
  replicator->OnView(ViewOf({"a", "b", "c"}));
  ASSERT_TRUE(replicator->AwaitIdle(absl::Now() + absl::Seconds(30)));
  std::map<uint64_t, bool> want = ExpectedForC();
  std::erase_if(want, [](const auto& entry) { return !entry.second; });
  absl::MutexLock lock(&received_.mu);
  EXPECT_EQ(received_.pages["c"], want);
  EXPECT_EQ(replicator->stats().unpinned_pages_copied, 0u);
}

// At 4 KiB a second, batches of one page are due a second apart: a newer
// view ends the pass long before it could finish.
TEST_F(ReplicatorTest, ANewerViewCutsTheBackgroundPassShort) {
  std::unique_ptr<Replicator> replicator = Start(4096, /*batch_pages=*/1);
  replicator->OnView(ViewOf({"a", "b", "c"}));
  // Wait until the pass has begun (its first page is due at once).
  for (int i = 0; i < 3000 && replicator->stats().unpinned_pages_copied == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ASSERT_GT(replicator->stats().unpinned_pages_copied, 0u);
  replicator->OnView(ViewOf({"a", "b"}));  // c left again
  // The second round starts once the first pass gave way (its own paced
  // pass then runs until the replicator ends, which cuts it short too).
  for (int i = 0; i < 3000 && replicator->stats().rounds < 2; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  ReplicatorStats stats = replicator->stats();
  EXPECT_EQ(stats.rounds, 2u);
  EXPECT_EQ(stats.passes_cut_short, 1u);
  uint64_t unpinned = 0;
  for (const auto& [n, pinned] : ExpectedForC()) unpinned += !pinned;
  EXPECT_LT(stats.unpinned_pages_copied, unpinned);
  EXPECT_FALSE(replicator->AwaitIdle(absl::Now()));
  replicator.reset();  // returns promptly: the pass waits on the stop too
}

}  // namespace
}  // namespace kvtier::cluster
