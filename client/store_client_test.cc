// StoreClient against an in-process gRPC server on loopback. The server is a
// small recording KvStore implementation, so these tests pin down what the
// client sends (chunking, checksums, retries, deadlines) independently of
// the store core; tests/ run the client against the real server.
#include "client/store_client.h"

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/synchronization/mutex.h"
#include "common/checksum.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace kvtier::client {
namespace {

constexpr size_t kPinIdBytes = 16;

// `n` big-endian in 16 bytes: ids with NUL and high bytes in them.
std::string PinIdBytes(uint64_t n) {
  std::string id(kPinIdBytes, '\xff');
  for (int i = 0; i < 8; ++i) id[kPinIdBytes - 1 - i] = static_cast<char>(n >> (8 * i));
  return id;
}

// Keeps pages in a map; records the size of every batch it receives; fails
// the next `fail_next` calls with `fail_code`.
class RecordingStore final : public v1::KvStore::Service {
 public:
  grpc::Status BatchPut(grpc::ServerContext*, const v1::BatchPutRequest* req,
                        v1::BatchPutResponse* resp) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = MaybeFail(); !s.ok()) return s;
    put_batches_.push_back(req->pages_size());
    for (const v1::PutPage& p : req->pages()) {
      if (p.checksum() != PageChecksum(p.inline_data().data(), p.inline_data().size())) {
        return grpc::Status(grpc::StatusCode::DATA_LOSS, "checksum");
      }
      const std::string k = p.key().SerializeAsString();
      resp->add_results()->set_already_present(pages_.count(k) > 0);
      pages_[k] = p;
    }
    return grpc::Status::OK;
  }
  grpc::Status BatchGet(grpc::ServerContext*, const v1::BatchGetRequest* req,
                        v1::BatchGetResponse* resp) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = MaybeFail(); !s.ok()) return s;
    get_batches_.push_back(req->keys_size());
    for (const v1::PageKey& key : req->keys()) {
      v1::GotPage* g = resp->add_pages();
      *g->mutable_key() = key;
      auto it = pages_.find(key.SerializeAsString());
      if (it == pages_.end()) {
        g->set_status(v1::PAGE_STATUS_NOT_FOUND);
        continue;
      }
      g->set_status(v1::PAGE_STATUS_OK);
      *g->mutable_layout() = it->second.layout();
      g->set_checksum(it->second.checksum());
      g->set_inline_data(it->second.inline_data());
      g->set_tier(v1::TIER_RAM);
    }
    return grpc::Status::OK;
  }
  // Pin ids as the server's contract has them (store.proto): empty creates
  // a pin with a fresh 16-byte id, other lengths are INVALID_ARGUMENT,
  // unknown ids NOT_FOUND.
  grpc::Status Pin(grpc::ServerContext*, const v1::PinRequest* req,
                   v1::PinResponse* resp) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = MaybeFail(); !s.ok()) return s;
    pin_requests_.push_back(*req);
    std::string id = req->pin_id();
    if (id.empty()) {
      id = PinIdBytes(created_pins_.size() + 1);
      created_pins_.push_back(id);
      live_pins_.insert(id);
    } else if (id.size() != kPinIdBytes) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "pin_id length");
    } else if (fail_pin_extend_ || !live_pins_.contains(id)) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown pin or key not stored");
    }
    if (!answer_empty_pin_id_) resp->set_pin_id(id);
    return grpc::Status::OK;
  }
  grpc::Status Unpin(grpc::ServerContext*, const v1::UnpinRequest* req,
                     v1::UnpinResponse*) override {
    absl::MutexLock lock(&mu_);
    unpinned_.push_back(req->pin_id());
    if (!req->pin_id().empty() && req->pin_id().size() != kPinIdBytes) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "pin_id length");
    }
    if (live_pins_.erase(req->pin_id()) == 0) {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown pin");
    }
    return grpc::Status::OK;
  }
  grpc::Status Stats(grpc::ServerContext*, const v1::StatsRequest*,
                     v1::StatsResponse* resp) override {
    absl::MutexLock lock(&mu_);
    if (grpc::Status s = MaybeFail(); !s.ok()) return s;
    ++stats_calls_;
    resp->set_put_pages(pages_.size());
    return grpc::Status::OK;
  }

  void FailNext(int n, grpc::StatusCode code) {
    absl::MutexLock lock(&mu_);
    fail_next_ = n;
    fail_code_ = code;
  }

  absl::Mutex mu_;
  std::map<std::string, v1::PutPage> pages_ ABSL_GUARDED_BY(mu_);
  std::vector<int> put_batches_ ABSL_GUARDED_BY(mu_);
  std::vector<int> get_batches_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::PinRequest> pin_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> unpinned_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> created_pins_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> live_pins_ ABSL_GUARDED_BY(mu_);
  int stats_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int failed_calls_ ABSL_GUARDED_BY(mu_) = 0;
  bool fail_pin_extend_ ABSL_GUARDED_BY(mu_) = false;
  bool answer_empty_pin_id_ ABSL_GUARDED_BY(mu_) = false;

 private:
  grpc::Status MaybeFail() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (fail_next_ == 0) return grpc::Status::OK;
    --fail_next_;
    ++failed_calls_;
    return grpc::Status(fail_code_, "injected");
  }
  int fail_next_ ABSL_GUARDED_BY(mu_) = 0;
  grpc::StatusCode fail_code_ ABSL_GUARDED_BY(mu_) = grpc::StatusCode::OK;
};

class StoreClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    builder.SetMaxReceiveMessageSize(64 << 20);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    ASSERT_NE(port_, 0);
  }
  void TearDown() override { server_->Shutdown(); }

  std::unique_ptr<StoreClient> Connect(ClientOptions options) {
    options.initial_backoff_ms = 1;
    options.max_backoff_ms = 2;
    auto client = StoreClient::Connect("127.0.0.1:" + std::to_string(port_), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return std::move(client).value();
  }

  static PageLayout Layout(uint32_t head_dim) {
    return PageLayout{.page_size = 16, .n_kv_heads = 1, .head_dim = head_dim};
  }
  static PageKey Key(uint64_t i) { return PageKey{.hash = {.hi = i, .lo = ~i}, .layer = 3}; }

  RecordingStore service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(StoreClientTest, PutSplitsByPageCountAndGetReturnsBytes) {
  ClientOptions options;
  options.max_batch_pages = 4;
  std::unique_ptr<StoreClient> client = Connect(options);
  const PageLayout layout = Layout(8);  // 2 * 16 * 8 * 2 = 512 bytes
  std::vector<std::string> bytes;
  std::vector<PutPage> pages;
  for (int i = 0; i < 10; ++i) bytes.push_back(std::string(layout.PageBytes(), char('a' + i)));
  for (int i = 0; i < 10; ++i) {
    pages.push_back(PutPage{.key = Key(i), .layout = layout,
                            .data = {reinterpret_cast<const uint8_t*>(bytes[i].data()),
                                     bytes[i].size()}});
  }
  absl::StatusOr<std::vector<PutOutcome>> put = client->BatchPut(pages);
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_EQ(put->size(), 10u);
  EXPECT_FALSE((*put)[9].already_present);
  {
    absl::MutexLock lock(&service_.mu_);
    EXPECT_THAT(service_.put_batches_, ::testing::ElementsAre(4, 4, 2));
  }
  std::vector<PageKey> keys;
  for (int i = 0; i < 10; ++i) keys.push_back(Key(i));
  keys.push_back(Key(99));
  absl::StatusOr<std::vector<GotPage>> got = client->BatchGet(keys);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 11u);
  for (int i = 0; i < 10; ++i) {
    EXPECT_EQ((*got)[i].status, v1::PAGE_STATUS_OK);
    EXPECT_EQ((*got)[i].key, Key(i));
    EXPECT_EQ((*got)[i].data, bytes[i]);
    EXPECT_EQ((*got)[i].layout, layout);
    EXPECT_EQ((*got)[i].checksum, PageChecksum(bytes[i].data(), bytes[i].size()));
  }
  EXPECT_EQ((*got)[10].status, v1::PAGE_STATUS_NOT_FOUND);
  absl::MutexLock lock(&service_.mu_);
  EXPECT_THAT(service_.get_batches_, ::testing::ElementsAre(4, 4, 3));
}

TEST_F(StoreClientTest, PutSplitsByMessageBytes) {
  ClientOptions options;
  options.max_message_bytes = 1 << 20;  // budget 1 MiB - 64 KiB
  std::unique_ptr<StoreClient> client = Connect(options);
  const PageLayout layout = Layout(1024);  // 2 * 16 * 1024 * 2 = 64 KiB
  const std::string bytes(layout.PageBytes(), 'x');
  std::vector<PutPage> pages;
  for (int i = 0; i < 20; ++i) {
    pages.push_back(PutPage{.key = Key(i), .layout = layout,
                            .data = {reinterpret_cast<const uint8_t*>(bytes.data()),
                                     bytes.size()}});
  }
  ASSERT_TRUE(client->BatchPut(pages).ok());
  absl::MutexLock lock(&service_.mu_);
  // (1 MiB - 64 KiB) / (64 KiB + 128) = 14 pages per message.
  EXPECT_THAT(service_.put_batches_, ::testing::ElementsAre(14, 6));
}

TEST_F(StoreClientTest, GetWithHintKeepsResponsesUnderTheLimit) {
  ClientOptions options;
  options.max_message_bytes = 1 << 20;
  std::unique_ptr<StoreClient> client = Connect(options);
  std::vector<PageKey> keys;
  for (int i = 0; i < 30; ++i) keys.push_back(Key(i));
  ASSERT_TRUE(client->BatchGet(keys, /*page_bytes_hint=*/64 << 10).ok());
  absl::MutexLock lock(&service_.mu_);
  EXPECT_THAT(service_.get_batches_, ::testing::ElementsAre(14, 14, 2));
}

TEST_F(StoreClientTest, GetWithoutHintSplitsAResponseThatIsTooLarge) {
  ClientOptions options;
  options.max_message_bytes = 1 << 20;
  std::unique_ptr<StoreClient> client = Connect(options);
  const PageLayout layout = Layout(1024);  // 64 KiB
  const std::string bytes(layout.PageBytes(), 'y');
  std::vector<PutPage> pages;
  std::vector<PageKey> keys;
  for (int i = 0; i < 24; ++i) {
    keys.push_back(Key(i));
    pages.push_back(PutPage{.key = Key(i), .layout = layout,
                            .data = {reinterpret_cast<const uint8_t*>(bytes.data()),
                                     bytes.size()}});
  }
  ASSERT_TRUE(client->BatchPut(pages).ok());
  absl::StatusOr<std::vector<GotPage>> got = client->BatchGet(keys);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 24u);
  for (int i = 0; i < 24; ++i) {
    EXPECT_EQ((*got)[i].key, Key(i));
    EXPECT_EQ((*got)[i].data, bytes);
  }
  absl::MutexLock lock(&service_.mu_);
  // 24 pages (1.5 MiB) exceed the 1 MiB receive limit; halves of 12 fit.
  EXPECT_THAT(service_.get_batches_, ::testing::ElementsAre(24, 12, 12));
}

TEST_F(StoreClientTest, OversizedPageIsRejectedBeforeSending) {
  ClientOptions options;
  options.max_message_bytes = 1 << 20;
  std::unique_ptr<StoreClient> client = Connect(options);
  const std::string bytes(1 << 20, 'x');
  PutPage page{.key = Key(1), .layout = Layout(8),
               .data = {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}};
  EXPECT_EQ(client->BatchPut({&page, 1}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->BatchPut({}).status().code(), absl::StatusCode::kInvalidArgument);
  absl::MutexLock lock(&service_.mu_);
  EXPECT_TRUE(service_.put_batches_.empty());
}

TEST_F(StoreClientTest, RetriesUnavailableUpToMaxAttempts) {
  ClientOptions options;
  options.max_attempts = 3;
  std::unique_ptr<StoreClient> client = Connect(options);
  service_.FailNext(2, grpc::StatusCode::UNAVAILABLE);
  absl::StatusOr<v1::StatsResponse> stats = client->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  {
    absl::MutexLock lock(&service_.mu_);
    EXPECT_EQ(service_.failed_calls_, 2);
    EXPECT_EQ(service_.stats_calls_, 1);
  }
  service_.FailNext(5, grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(client->Stats().status().code(), absl::StatusCode::kUnavailable);
  absl::MutexLock lock(&service_.mu_);
  EXPECT_EQ(service_.failed_calls_, 5);  // 2 before + 3 attempts
  EXPECT_EQ(service_.stats_calls_, 1);
}

TEST_F(StoreClientTest, OtherErrorsAreNotRetried) {
  std::unique_ptr<StoreClient> client = Connect(ClientOptions());
  service_.FailNext(1, grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(client->Stats().status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(client->Stats().ok());
  absl::MutexLock lock(&service_.mu_);
  EXPECT_EQ(service_.failed_calls_, 1);
  EXPECT_EQ(service_.stats_calls_, 1);
}

TEST_F(StoreClientTest, SplitPinExtendsThePinAndReleasesItOnFailure) {
  ClientOptions options;
  options.max_batch_pages = 2;
  std::unique_ptr<StoreClient> client = Connect(options);
  std::vector<PageKey> keys = {Key(1), Key(2), Key(3)};
  absl::StatusOr<std::string> pin = client->Pin(keys, 1000);
  ASSERT_TRUE(pin.ok()) << pin.status();
  EXPECT_EQ(*pin, PinIdBytes(1));
  {
    absl::MutexLock lock(&service_.mu_);
    ASSERT_EQ(service_.pin_requests_.size(), 2u);
    EXPECT_EQ(service_.pin_requests_[0].pin_id(), "");
    EXPECT_EQ(service_.pin_requests_[0].keys_size(), 2);
    EXPECT_EQ(service_.pin_requests_[1].pin_id(), PinIdBytes(1));
    EXPECT_EQ(service_.pin_requests_[1].keys_size(), 1);
    EXPECT_EQ(service_.pin_requests_[1].ttl_ms(), 1000u);
    service_.fail_pin_extend_ = true;
  }
  EXPECT_EQ(client->Pin(keys, 1000).status().code(), absl::StatusCode::kNotFound);
  absl::MutexLock lock(&service_.mu_);
  // The second pin, created by the failed call's first chunk, is released.
  EXPECT_THAT(service_.unpinned_, ::testing::ElementsAre(PinIdBytes(2)));
  EXPECT_THAT(service_.live_pins_, ::testing::UnorderedElementsAre(PinIdBytes(1)));
}

TEST_F(StoreClientTest, PinIdsAreTheServersBytesUnchanged) {
  std::unique_ptr<StoreClient> client = Connect(ClientOptions());
  absl::StatusOr<std::string> first = client->Pin({Key(1)}, 1000);
  absl::StatusOr<std::string> second = client->Pin({Key(1)}, 1000);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->size(), 16u);
  EXPECT_EQ(*first, PinIdBytes(1));  // NUL bytes included
  EXPECT_EQ(*second, PinIdBytes(2));
  EXPECT_NE(*first, *second);
  // Extending sends the id as given and returns it.
  absl::StatusOr<std::string> extended = client->Pin({Key(2)}, 500, *first);
  ASSERT_TRUE(extended.ok()) << extended.status();
  EXPECT_EQ(*extended, *first);
  {
    absl::MutexLock lock(&service_.mu_);
    ASSERT_EQ(service_.pin_requests_.size(), 3u);
    EXPECT_EQ(service_.pin_requests_[2].pin_id(), *first);
    EXPECT_EQ(service_.pin_requests_[2].ttl_ms(), 500u);
  }
  EXPECT_TRUE(client->Unpin(*first).ok());
  EXPECT_EQ(client->Unpin(*first).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client->Pin({Key(2)}, 500, *first).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client->Pin({Key(2)}, 500, "short").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(StoreClientTest, UnpinReturnsTheServersCodeForBadIds) {
  std::unique_ptr<StoreClient> client = Connect(ClientOptions());
  EXPECT_EQ(client->Unpin("12345").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->Unpin(PinIdBytes(77)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(client->Unpin("").code(), absl::StatusCode::kNotFound);
  absl::MutexLock lock(&service_.mu_);
  EXPECT_THAT(service_.unpinned_, ::testing::ElementsAre("12345", PinIdBytes(77), ""));
}

TEST_F(StoreClientTest, AnEmptyPinIdFromTheServerIsInternal) {
  ClientOptions options;
  options.max_batch_pages = 1;
  std::unique_ptr<StoreClient> client = Connect(options);
  {
    absl::MutexLock lock(&service_.mu_);
    service_.answer_empty_pin_id_ = true;
  }
  EXPECT_EQ(client->Pin({Key(1), Key(2)}, 1000).status().code(), absl::StatusCode::kInternal);
  absl::MutexLock lock(&service_.mu_);
  // Stopped after the first chunk: a second would have created another pin.
  EXPECT_EQ(service_.pin_requests_.size(), 1u);
}

TEST_F(StoreClientTest, UnreachableServerIsUnavailableAfterBoundedAttempts) {
  ClientOptions options;
  options.max_attempts = 2;
  options.deadline_ms = 2000;
  options.initial_backoff_ms = 1;
  options.max_backoff_ms = 1;
  server_->Shutdown();
  auto client = StoreClient::Connect("127.0.0.1:" + std::to_string(port_), options);
  ASSERT_TRUE(client.ok());
  EXPECT_EQ((*client)->Stats().status().code(), absl::StatusCode::kUnavailable);
}

TEST(ClientOptionsTest, ValidateNamesTheBadOption) {
  EXPECT_TRUE(ClientOptions().Validate().ok());
  auto check = [](auto mutate, const char* name) {
    ClientOptions o;
    mutate(o);
    absl::Status s = o.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(s.message().find(name), absl::string_view::npos) << s;
  };
  check([](ClientOptions& o) { o.deadline_ms = 0; }, "deadline_ms");
  check([](ClientOptions& o) { o.max_batch_pages = 0; }, "max_batch_pages");
  check([](ClientOptions& o) { o.max_message_bytes = 1000; }, "max_message_bytes");
  check([](ClientOptions& o) { o.max_message_bytes = uint64_t{4} << 30; }, "max_message_bytes");
  check([](ClientOptions& o) { o.max_attempts = 0; }, "max_attempts");
  check([](ClientOptions& o) { o.initial_backoff_ms = 0; }, "initial_backoff_ms");
  check([](ClientOptions& o) { o.max_backoff_ms = 10; }, "max_backoff_ms");
  check([](ClientOptions& o) { o.backoff_multiplier = 0.5; }, "backoff_multiplier");
  check([](ClientOptions& o) { o.jitter = 1.5; }, "jitter");
  check([](ClientOptions& o) { o.ucx_window = 0; }, "ucx_window");
  check([](ClientOptions& o) { o.ucx_window = 4097; }, "ucx_window");
  check([](ClientOptions& o) { o.ucx_region_bytes = 1000; }, "ucx_region_bytes");
  check([](ClientOptions& o) { o.ucx_region_bytes = uint64_t{3} << 30; }, "ucx_region_bytes");
  check([](ClientOptions& o) { o.ucx_reopen_interval_ms = 0; }, "ucx_reopen_interval_ms");
  EXPECT_EQ(StoreClient::Connect("x:1", ClientOptions{.max_attempts = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier::client
