// CacheEventFeed::Watch through an in-process gRPC server: a stream is
// registered only while what granted it still holds, so that a reload of
// the access file between a watcher's authentication and its stream's
// registration, which EndStreams would miss, refuses the stream instead.
#include "kvstore/service/cache_event_feed.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "kvstore/core/cache_events.h"
#include "kvstore/core/store.h"
#include "kvtier/v1/store.grpc.pb.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::TempDir;

// Serves WatchCacheEvents alone, for one tenant, granted while `granted`.
class WatchOnly final : public v1::KvStore::CallbackService {
 public:
  WatchOnly(CacheEventFeed* feed, const std::atomic<bool>* granted)
      : feed_(feed), granted_(granted) {}

  grpc::ServerWriteReactor<v1::CacheEventBatch>* WatchCacheEvents(
      grpc::CallbackServerContext* context,
      const v1::WatchCacheEventsRequest* request) override {
    return feed_->Watch(context, /*tenant=*/7, *request, [this] { return granted_->load(); });
  }

 private:
  CacheEventFeed* const feed_;
  const std::atomic<bool>* const granted_;
};

TEST(CacheEventFeedTest, AStreamWhoseGrantWasRevokedIsRefusedAndNotRegistered) {
  TempDir dir;
  StoreOptions options;
  options.data_dir = dir.path();
  options.ram.capacity_bytes = 1 << 20;
  std::unique_ptr<Store> store = *Store::Open(options);
  CacheEventLog log(1024);
  CacheEventFeed feed(&log, store.get(), CacheEventFeedOptions{});
  std::atomic<bool> granted{false};
  WatchOnly service(&feed, &granted);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<v1::KvStore::Stub> stub =
      v1::KvStore::NewStub(server->InProcessChannel(grpc::ChannelArguments()));

  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    std::unique_ptr<grpc::ClientReader<v1::CacheEventBatch>> reader =
        stub->WatchCacheEvents(&context, v1::WatchCacheEventsRequest());
    v1::CacheEventBatch batch;
    EXPECT_FALSE(reader->Read(&batch));
    const grpc::Status status = reader->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(status.error_message(), "the credentials were reloaded meanwhile; watch again");
    EXPECT_EQ(feed.watchers(), 0u);
  }

  // Granted, the same call gets its stream (its first batch, the snapshot).
  granted = true;
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::CacheEventBatch>> reader =
      stub->WatchCacheEvents(&context, v1::WatchCacheEventsRequest());
  v1::CacheEventBatch batch;
  ASSERT_TRUE(reader->Read(&batch));
  EXPECT_EQ(feed.watchers(), 1u);
  feed.EndStreams("done");
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAVAILABLE);
  feed.Stop();
  server->Shutdown();
}

}  // namespace
}  // namespace kvtier::store
