// WatchCacheEvents against the real kvtier-server: snapshots, live events,
// resuming from a cursor, resynchronising when the cursor is lost, tenants'
// separate streams, limits, streams ended by a reload of the access file
// and by a stopping server.
#include <signal.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "client/cache_event_view.h"
#include "client/store_client.h"
#include "gtest/gtest.h"
#include "kvstore/access/access_table.h"
#include "testing/server_process.h"

namespace kvtier::testing {
namespace {

constexpr char kAcme[] = "acme-token-0123456789abcdef";
constexpr char kGlobex[] = "globex-token-0123456789abcdef";

PageLayout Layout() {
  return PageLayout{.page_size = 4, .n_kv_heads = 1, .head_dim = 8, .dtype = DType::kF32};
}

Hash128 H(uint64_t n) { return Hash128{.hi = 0xe7e7, .lo = n}; }

const std::string& Bytes() {
  static const std::string* bytes = new std::string(Layout().PageBytes(), 'e');
  return *bytes;
}

// Pages first..last in layers 0 and 1.
std::vector<client::PutPage> Pages(uint64_t first, uint64_t last) {
  std::vector<client::PutPage> pages;
  for (uint64_t n = first; n <= last; ++n) {
    for (uint32_t layer = 0; layer < 2; ++layer) {
      pages.push_back(client::PutPage{
          .key = PageKey{.hash = H(n), .layer = layer},
          .layout = Layout(),
          .data = {reinterpret_cast<const uint8_t*>(Bytes().data()), Bytes().size()}});
    }
  }
  return pages;
}

// A stream whose reads give up (cancelling it) after a deadline, so a
// missing batch fails the test instead of hanging it.
class Reader {
 public:
  Reader(client::StoreClient& client, const v1::WatchCacheEventsRequest& request)
      : stream_(client.WatchCacheEvents(request)) {}

  // The next batch, or nullopt when the stream ended or `timeout` passed.
  std::optional<v1::CacheEventBatch> Next(absl::Duration timeout = absl::Seconds(20)) {
    absl::Notification got;
    std::thread watchdog([&] {
      if (!got.WaitForNotificationWithTimeout(timeout)) stream_->Cancel();
    });
    v1::CacheEventBatch batch;
    const bool ok = stream_->Next(&batch);
    got.Notify();
    watchdog.join();
    if (!ok) return std::nullopt;
    return batch;
  }

  // Applies batches to `view` until `done(view)`; false on a timeout, an
  // ended stream or a batch the view refuses.
  template <typename Done>
  bool ApplyUntil(client::NodePageView& view, Done done,
                  absl::Duration timeout = absl::Seconds(20)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!done(view)) {
      std::optional<v1::CacheEventBatch> batch = Next(deadline - absl::Now());
      if (!batch.has_value()) return false;
      batches_.push_back(*batch);
      if (absl::Status s = view.Apply(*batch); !s.ok()) {
        ADD_FAILURE() << s;
        return false;
      }
    }
    return true;
  }

  absl::Status Finish() {
    stream_->Cancel();
    v1::CacheEventBatch ignored;
    while (stream_->Next(&ignored)) {
    }
    return stream_->Finish();
  }
  // What a stream that ended by itself ended with.
  absl::Status EndStatus() {
    v1::CacheEventBatch ignored;
    while (Next().has_value()) {
    }
    return stream_->Finish();
  }

  const std::vector<v1::CacheEventBatch>& batches() const { return batches_; }

 private:
  std::unique_ptr<client::CacheEventStream> stream_;
  std::vector<v1::CacheEventBatch> batches_;
};

class CacheEventsTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--data_dir=" + dir_.path() + "/data", "--ram_bytes=8388608",
                                     "--disk_bytes=67108864", "--noucx"};
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  std::unique_ptr<client::StoreClient> Client(const std::string& token = "") {
    client::ClientOptions options;
    options.token = token;
    options.max_attempts = 1;
    options.deadline_ms = 10'000;
    options.use_ucx = false;
    options.local_lanes = false;
    absl::StatusOr<std::unique_ptr<client::StoreClient>> c =
        client::StoreClient::Connect(server_->target(), options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  static v1::WatchCacheEventsRequest LayerZero() {
    v1::WatchCacheEventsRequest request;
    request.set_layer(0);
    return request;
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(CacheEventsTest, SnapshotThenPutsAndDeletesOfOneLayer) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto client = Client();
  ASSERT_TRUE(client->BatchPut(Pages(1, 2)).ok());
  Reader reader(*client, LayerZero());
  client::NodePageView view;
  ASSERT_TRUE(reader.ApplyUntil(view, [](const auto& v) { return v.synced(); }));
  EXPECT_TRUE(reader.batches().front().reset());
  EXPECT_EQ(view.node_id(), "local");
  EXPECT_EQ(view.pages(), 2u);  // layer 0 only
  EXPECT_EQ(view.PrefixPages({H(1), H(2), H(3)}, 0), 2u);

  ASSERT_TRUE(client->BatchPut(Pages(3, 4)).ok());
  ASSERT_TRUE(reader.ApplyUntil(view, [](const auto& v) { return v.pages() == 4; }));
  ASSERT_EQ(*client->Delete({PageKey{.hash = H(2), .layer = 0}}), 1u);
  ASSERT_TRUE(reader.ApplyUntil(view, [](const auto& v) { return !v.Holds(H(2), 0); }));
  EXPECT_EQ(view.PrefixPages({H(1), H(2), H(3)}, 0), 1u);
  EXPECT_TRUE(view.Holds(H(3), 0));
  EXPECT_TRUE(view.Holds(H(4), 0));
  EXPECT_FALSE(view.Holds(H(1), 1));  // layer 1 is not watched
  EXPECT_EQ(reader.Finish().code(), absl::StatusCode::kCancelled);
}

TEST_F(CacheEventsTest, ResumesFromItsCursorWithoutASnapshot) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto client = Client();
  ASSERT_TRUE(client->BatchPut(Pages(1, 3)).ok());
  client::NodePageView view;
  {
    Reader reader(*client, view.ResumeRequest(0u));
    ASSERT_TRUE(reader.ApplyUntil(view, [](const auto& v) { return v.synced(); }));
    reader.Finish().IgnoreError();
  }
  ASSERT_TRUE(client->BatchPut(Pages(4, 5)).ok());
  ASSERT_EQ(*client->Delete({PageKey{.hash = H(1), .layer = 0}}), 1u);
  Reader resumed(*client, view.ResumeRequest(0u));
  ASSERT_TRUE(resumed.ApplyUntil(view, [](const auto& v) {
    return v.pages() == 4 && !v.Holds(H(1), 0);
  }));
  for (const v1::CacheEventBatch& batch : resumed.batches()) {
    EXPECT_FALSE(batch.reset());
    for (const v1::CacheEvent& event : batch.events()) {
      // Only what happened while it was away: pages 4 and 5, and 1's removal.
      const uint64_t n = Hash128::FromCanonical(
                             reinterpret_cast<const uint8_t*>(event.key().hash().data()))
                             .lo;
      EXPECT_TRUE(n == 4 || n == 5 || (n == 1 && event.kind() == v1::CacheEvent::REMOVED)) << n;
    }
  }
}

// A cursor the node cannot resume from (another epoch, overwritten
// events, a sequence number from the future) gets a fresh snapshot.
TEST_F(CacheEventsTest, LostCursorsGetASnapshotInSmallBatches) {
  ASSERT_NO_FATAL_FAILURE(Start({"--event_log_capacity=4"}));
  auto client = Client();
  ASSERT_TRUE(client->BatchPut(Pages(1, 1)).ok());
  client::NodePageView view;
  {
    Reader reader(*client, view.ResumeRequest(0u));
    ASSERT_TRUE(reader.ApplyUntil(view, [](const auto& v) { return v.synced(); }));
    reader.Finish().IgnoreError();
  }
  ASSERT_EQ(view.pages(), 1u);
  const uint64_t epoch = view.epoch();
  ASSERT_TRUE(client->BatchPut(Pages(2, 6)).ok());  // 10 events: past the log's 4

  v1::WatchCacheEventsRequest request = view.ResumeRequest(0u);
  request.set_max_batch_events(2);
  Reader reader(*client, request);
  ASSERT_TRUE(reader.ApplyUntil(view, [](const auto& v) { return v.pages() == 6 && v.synced(); }));
  ASSERT_EQ(reader.batches().size(), 3u);  // 6 pages, 2 a batch
  EXPECT_TRUE(reader.batches()[0].reset());
  EXPECT_EQ(reader.batches()[0].next_seq(), 0u);
  EXPECT_EQ(reader.batches()[1].next_seq(), 0u);
  EXPECT_TRUE(reader.batches()[2].snapshot_done());
  EXPECT_EQ(reader.batches()[2].next_seq(), 13u);  // 12 events so far, numbered from 1
  EXPECT_EQ(view.pages(), 6u);
  EXPECT_EQ(view.epoch(), epoch);
  reader.Finish().IgnoreError();

  for (auto [bad_epoch, bad_seq] : {std::pair<uint64_t, uint64_t>{epoch + 1, 12},
                                    std::pair<uint64_t, uint64_t>{epoch, 1000}}) {
    v1::WatchCacheEventsRequest stale = LayerZero();
    stale.set_epoch(bad_epoch);
    stale.set_from_seq(bad_seq);
    Reader again(*client, stale);
    std::optional<v1::CacheEventBatch> first = again.Next();
    ASSERT_TRUE(first.has_value());
    EXPECT_TRUE(first->reset()) << bad_epoch << " " << bad_seq;
    EXPECT_TRUE(first->snapshot_done());
    EXPECT_EQ(first->events_size(), 6);
    again.Finish().IgnoreError();
  }
}

TEST_F(CacheEventsTest, EachTenantSeesOnlyItsOwnPages) {
  const std::string access = dir_.path() + "/access.txt";
  std::ofstream(access) << "tenant=acme role=tenant token_sha256=" << access::HashToken(kAcme)
                        << "\ntenant=globex role=tenant token_sha256="
                        << access::HashToken(kGlobex) << "\n";
  ASSERT_NO_FATAL_FAILURE(Start({"--access_file=" + access}));
  auto acme = Client(kAcme);
  auto globex = Client(kGlobex);
  ASSERT_TRUE(acme->BatchPut(Pages(1, 3)).ok());
  Reader acme_reader(*acme, LayerZero());
  Reader globex_reader(*globex, LayerZero());
  client::NodePageView acme_view;
  client::NodePageView globex_view;
  ASSERT_TRUE(acme_reader.ApplyUntil(acme_view, [](const auto& v) { return v.synced(); }));
  ASSERT_TRUE(globex_reader.ApplyUntil(globex_view, [](const auto& v) { return v.synced(); }));
  EXPECT_EQ(acme_view.pages(), 3u);
  EXPECT_EQ(globex_view.pages(), 0u);
  // Globex's own put is the next thing its stream shows; acme's later put
  // never appears in it.
  ASSERT_TRUE(acme->BatchPut(Pages(10, 10)).ok());
  ASSERT_TRUE(globex->BatchPut(Pages(20, 20)).ok());
  ASSERT_TRUE(globex_reader.ApplyUntil(globex_view, [](const auto& v) { return v.pages() == 1; }));
  ASSERT_TRUE(acme_reader.ApplyUntil(acme_view, [](const auto& v) { return v.pages() == 4; }));
  EXPECT_TRUE(globex_view.Holds(H(20), 0));
  EXPECT_FALSE(globex_view.Holds(H(10), 0));
  EXPECT_FALSE(acme_view.Holds(H(20), 0));
  // Without a credential there is no stream.
  Reader anonymous(*Client(), LayerZero());
  EXPECT_EQ(anonymous.EndStatus().code(), absl::StatusCode::kUnauthenticated);
}

// A stream is granted to a credential of the access table in force when it
// opened: reloading the file ends every open stream, so a revoked token
// sees nothing more, and a token still valid watches again from its cursor.
TEST_F(CacheEventsTest, ReloadingTheAccessFileEndsTheStreamsItGranted) {
  const std::string access = dir_.path() + "/access.txt";
  const std::string acme_line =
      absl::StrCat("tenant=acme role=tenant token_sha256=", access::HashToken(kAcme), "\n");
  std::ofstream(access) << acme_line << "tenant=globex role=tenant token_sha256="
                        << access::HashToken(kGlobex) << "\n";
  ASSERT_NO_FATAL_FAILURE(Start({"--access_file=" + access}));
  auto acme = Client(kAcme);
  auto globex = Client(kGlobex);
  Reader acme_reader(*acme, LayerZero());
  Reader globex_reader(*globex, LayerZero());
  client::NodePageView acme_view;
  client::NodePageView globex_view;
  ASSERT_TRUE(acme_reader.ApplyUntil(acme_view, [](const auto& v) { return v.synced(); }));
  ASSERT_TRUE(globex_reader.ApplyUntil(globex_view, [](const auto& v) { return v.synced(); }));
  std::ofstream(access, std::ios::trunc) << acme_line;  // globex revoked
  ASSERT_TRUE(server_->Signal(SIGHUP).ok());
  for (Reader* reader : {&globex_reader, &acme_reader}) {
    const absl::Status ended = reader->EndStatus();
    EXPECT_EQ(ended.code(), absl::StatusCode::kUnavailable) << ended;
    EXPECT_NE(ended.message().find("access file was reloaded"), absl::string_view::npos)
        << ended;
  }
  EXPECT_EQ(globex->BatchPut(Pages(20, 20)).status().code(),
            absl::StatusCode::kUnauthenticated);
  Reader globex_again(*globex, globex_view.ResumeRequest(0u));
  EXPECT_EQ(globex_again.EndStatus().code(), absl::StatusCode::kUnauthenticated);
  // acme resumes where it was and sees its next put, no snapshot.
  ASSERT_TRUE(acme->BatchPut(Pages(10, 10)).ok());
  Reader acme_again(*acme, acme_view.ResumeRequest(0u));
  ASSERT_TRUE(acme_again.ApplyUntil(acme_view, [](const auto& v) { return v.pages() == 1; }));
  for (const v1::CacheEventBatch& batch : acme_again.batches()) EXPECT_FALSE(batch.reset());
  EXPECT_TRUE(acme_view.Holds(H(10), 0));
}

TEST_F(CacheEventsTest, LimitsAndBadRequestsAreRefused) {
  ASSERT_NO_FATAL_FAILURE(Start({"--max_event_watchers=2", "--max_event_watchers_per_tenant=1"}));
  auto client = Client();
  v1::WatchCacheEventsRequest huge = LayerZero();
  huge.set_max_batch_events(65537);
  Reader bad(*client, huge);
  EXPECT_EQ(bad.EndStatus().code(), absl::StatusCode::kInvalidArgument);

  Reader first(*client, LayerZero());
  ASSERT_TRUE(first.Next().has_value());
  Reader second(*client, LayerZero());
  EXPECT_EQ(second.EndStatus().code(), absl::StatusCode::kResourceExhausted);
  // The first stream is unaffected, and its slot is free again once it ends.
  ASSERT_TRUE(client->BatchPut(Pages(1, 1)).ok());
  std::optional<v1::CacheEventBatch> event = first.Next();
  ASSERT_TRUE(event.has_value());
  EXPECT_EQ(event->events_size(), 1);
  first.Finish().IgnoreError();
  absl::Status third = absl::UnknownError("not tried");
  for (int attempt = 0; attempt < 100; ++attempt) {  // the server sees the cancel soon
    Reader again(*client, LayerZero());
    std::optional<v1::CacheEventBatch> batch = again.Next();
    if (batch.has_value()) {
      third = absl::OkStatus();
      again.Finish().IgnoreError();
      break;
    }
    third = again.EndStatus();
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(third.ok()) << third;
}

TEST_F(CacheEventsTest, NoEventLogMeansFailedPrecondition) {
  ASSERT_NO_FATAL_FAILURE(Start({"--event_log_capacity=0"}));
  auto client = Client();
  Reader reader(*client, LayerZero());
  EXPECT_EQ(reader.EndStatus().code(), absl::StatusCode::kFailedPrecondition);
}

// A stopping server ends its streams itself: they do not hold up its
// shutdown, and the watcher learns at once.
TEST_F(CacheEventsTest, StoppingServerEndsStreamsWithUnavailable) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto client = Client();
  Reader reader(*client, LayerZero());
  ASSERT_TRUE(reader.Next().has_value());
  absl::StatusOr<ExitResult> exit = absl::UnknownError("not stopped");
  std::thread stopper([&] { exit = server_->Stop(); });
  const absl::Status ended = reader.EndStatus();
  stopper.join();
  // Ended by the server's own Stop, not cancelled by gRPC's shutdown grace.
  EXPECT_EQ(ended.code(), absl::StatusCode::kUnavailable) << ended;
  EXPECT_NE(ended.message().find("the server is stopping"), absl::string_view::npos) << ended;
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code, 0) << exit->stderr_text;
}

}  // namespace
}  // namespace kvtier::testing
