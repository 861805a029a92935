// NodePageView: snapshots, events, resumption, and batches it must refuse
// without changing anything.
#include "client/cache_event_view.h"

#include <gtest/gtest.h>

#include <string>

#include "kvtier/v1/convert.h"

namespace kvtier::client {
namespace {

constexpr uint64_t kEpoch = 0xe90c;

Hash128 H(uint64_t n) { return Hash128{.hi = 7, .lo = n}; }

void Add(v1::CacheEventBatch* batch, v1::CacheEvent::Kind kind, uint64_t n, uint32_t layer = 0) {
  v1::CacheEvent* event = batch->add_events();
  event->set_kind(kind);
  v1::KeyToProto(PageKey{.hash = H(n), .layer = layer}, event->mutable_key());
}

v1::CacheEventBatch Batch(uint64_t next_seq, bool reset = false, bool done = false,
                          uint64_t epoch = kEpoch) {
  v1::CacheEventBatch batch;
  batch.set_node_id("n1");
  batch.set_epoch(epoch);
  batch.set_reset(reset);
  batch.set_snapshot_done(done);
  batch.set_next_seq(next_seq);
  return batch;
}

// A view synced on pages 1..3 at cursor 10.
NodePageView Synced() {
  NodePageView view;
  v1::CacheEventBatch first = Batch(0, /*reset=*/true);
  Add(&first, v1::CacheEvent::STORED, 1);
  Add(&first, v1::CacheEvent::STORED, 2);
  EXPECT_TRUE(view.Apply(first).ok());
  EXPECT_FALSE(view.synced());
  v1::CacheEventBatch last = Batch(10, false, /*done=*/true);
  Add(&last, v1::CacheEvent::STORED, 3);
  EXPECT_TRUE(view.Apply(last).ok());
  return view;
}

TEST(NodePageViewTest, SnapshotThenEventsGiveThePagesAndPrefix) {
  NodePageView view = Synced();
  EXPECT_TRUE(view.synced());
  EXPECT_EQ(view.node_id(), "n1");
  EXPECT_EQ(view.pages(), 3u);
  EXPECT_EQ(view.PrefixPages({H(1), H(2), H(3), H(4)}, 0), 3u);
  EXPECT_EQ(view.PrefixPages({H(1), H(2), H(3)}, 1), 0u);

  v1::CacheEventBatch events = Batch(14);
  Add(&events, v1::CacheEvent::REMOVED, 2);
  Add(&events, v1::CacheEvent::STORED, 4);
  ASSERT_TRUE(view.Apply(events).ok());
  EXPECT_EQ(view.PrefixPages({H(1), H(2), H(3)}, 0), 1u);
  EXPECT_TRUE(view.Holds(H(4), 0));
  EXPECT_FALSE(view.Holds(H(2), 0));

  v1::WatchCacheEventsRequest resume = view.ResumeRequest(0u);
  EXPECT_EQ(resume.epoch(), kEpoch);
  EXPECT_EQ(resume.from_seq(), 14u);
  EXPECT_TRUE(resume.has_layer());
  EXPECT_FALSE(view.ResumeRequest(std::nullopt).has_layer());
}

TEST(NodePageViewTest, ResetForgetsEverythingAndUnsyncedViewsAskForASnapshot) {
  NodePageView view = Synced();
  v1::CacheEventBatch reset = Batch(0, /*reset=*/true, false, /*epoch=*/kEpoch + 1);
  Add(&reset, v1::CacheEvent::STORED, 9);
  ASSERT_TRUE(view.Apply(reset).ok());
  EXPECT_FALSE(view.synced());
  EXPECT_EQ(view.pages(), 1u);
  EXPECT_EQ(view.epoch(), kEpoch + 1);
  // Until the snapshot is done, a reconnect asks for a new one.
  EXPECT_EQ(view.ResumeRequest(std::nullopt).epoch(), 0u);
  EXPECT_EQ(view.ResumeRequest(std::nullopt).from_seq(), 0u);
  view.Clear();
  EXPECT_EQ(view.pages(), 0u);
  EXPECT_EQ(view.epoch(), 0u);
}

TEST(NodePageViewTest, MalformedBatchesAreRefusedAndChangeNothing) {
  struct Case {
    const char* what;
    v1::CacheEventBatch batch;
  };
  std::vector<Case> cases;
  {
    v1::CacheEventBatch b = Batch(11, false, false, /*epoch=*/0);
    cases.push_back({"epoch 0", b});
  }
  {
    v1::CacheEventBatch b = Batch(11, false, false, /*epoch=*/kEpoch + 5);
    Add(&b, v1::CacheEvent::STORED, 8);
    cases.push_back({"another epoch without a reset", b});
  }
  {
    v1::CacheEventBatch b = Batch(9);
    Add(&b, v1::CacheEvent::STORED, 8);
    cases.push_back({"a cursor going back", b});
  }
  {
    v1::CacheEventBatch b = Batch(0);
    cases.push_back({"no cursor", b});
  }
  {
    v1::CacheEventBatch b = Batch(12);
    Add(&b, v1::CacheEvent::STORED, 8);
    Add(&b, v1::CacheEvent::KIND_UNSPECIFIED, 9);
    cases.push_back({"an unknown kind after a good event", b});
  }
  {
    v1::CacheEventBatch b = Batch(12);
    Add(&b, v1::CacheEvent::REMOVED, 1);
    b.mutable_events(0)->mutable_key()->set_hash("short");
    cases.push_back({"a key of 5 bytes", b});
  }
  {
    v1::CacheEventBatch b = Batch(0, /*reset=*/true, false);
    Add(&b, v1::CacheEvent::REMOVED, 1);
    cases.push_back({"a removal inside a snapshot", b});
  }
  {
    v1::CacheEventBatch b = Batch(12, /*reset=*/true, /*done=*/false);
    cases.push_back({"a cursor inside a snapshot", b});
  }
  for (const Case& c : cases) {
    NodePageView view = Synced();
    absl::Status applied = view.Apply(c.batch);
    EXPECT_EQ(applied.code(), absl::StatusCode::kInvalidArgument) << c.what;
    EXPECT_EQ(view.pages(), 3u) << c.what;
    EXPECT_TRUE(view.Holds(H(1), 0)) << c.what;
    EXPECT_FALSE(view.Holds(H(8), 0)) << c.what;
    EXPECT_EQ(view.next_seq(), 10u) << c.what;
    EXPECT_EQ(view.epoch(), kEpoch) << c.what;
    EXPECT_TRUE(view.synced()) << c.what;
  }
  // A fresh view takes nothing but a reset.
  NodePageView fresh;
  EXPECT_EQ(fresh.Apply(Batch(12)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(fresh.epoch(), 0u);
}

}  // namespace
}  // namespace kvtier::client
