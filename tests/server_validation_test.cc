// Bad requests against the real kvtier-server: each gets the status code
// documented in store.proto and changes nothing, which is checked through
// Stats and Get afterwards. Requests go through the raw stub, so malformed
// wire values (short hashes, unspecified enums) can be sent.
#include <memory>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/store.grpc.pb.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"

namespace kvtier::testing {
namespace {

constexpr int kMaxBatch = 4;
constexpr int kMaxLookup = 8;
constexpr uint64_t kMaxTtlMs = 60'000;

v1::PutPage WirePage(const PageLayout& layout, const PageKey& key) {
  v1::PutPage page;
  v1::KeyToProto(key, page.mutable_key());
  v1::LayoutToProto(layout, page.mutable_layout());
  const std::string bytes = PageBytes(layout, key);
  page.set_checksum(PageChecksum(bytes.data(), bytes.size()));
  page.set_inline_data(bytes);
  return page;
}

// The parts of Stats a rejected request must leave alone (read counters
// such as lookups and misses legitimately move).
std::string StateOf(const v1::StatsResponse& s) {
  v1::StatsResponse state = s;
  state.clear_get_misses();
  state.clear_lookups();
  // Reads count, and what they served.
  state.mutable_ram()->clear_hits();
  state.mutable_disk()->clear_hits();
  state.mutable_ram()->clear_bytes_out();
  state.mutable_disk()->clear_bytes_out();
  // The directory's measured size moves with RocksDB's own background work
  // (flushes, log preallocation), not with requests.
  state.clear_data_dir_bytes();
  return state.ShortDebugString();
}

class ServerValidationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
        {"--data_dir=" + dir_.path() + "/data", "--max_batch_pages=" + std::to_string(kMaxBatch),
         "--max_lookup_pages=" + std::to_string(kMaxLookup),
         "--max_pin_ttl_ms=" + std::to_string(kMaxTtlMs)},
        dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    stub_ = v1::KvStore::NewStub(
        grpc::CreateChannel(server_->target(), grpc::InsecureChannelCredentials()));
    chain_ = PromptChain(layout_, 6, 5);
    stored_ = PageKey{.hash = chain_[0], .layer = 0};
    v1::BatchPutRequest put;
    *put.add_pages() = WirePage(layout_, stored_);
    v1::BatchPutResponse response;
    ASSERT_TRUE(Call(&v1::KvStore::Stub::BatchPut, put, &response).ok());
    before_ = StateOf(Stats());
  }

  template <typename Req, typename Resp>
  grpc::Status Call(grpc::Status (v1::KvStore::Stub::*method)(grpc::ClientContext*, const Req&,
                                                               Resp*),
                    const Req& request, Resp* response) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    return (stub_.get()->*method)(&context, request, response);
  }

  v1::StatsResponse Stats() {
    v1::StatsResponse stats;
    EXPECT_TRUE(Call(&v1::KvStore::Stub::Stats, v1::StatsRequest(), &stats).ok());
    return stats;
  }

  grpc::StatusCode Put(const v1::BatchPutRequest& request) {
    v1::BatchPutResponse response;
    return Call(&v1::KvStore::Stub::BatchPut, request, &response).error_code();
  }

  // Nothing changed, and the stored page is still served intact.
  void ExpectUnchanged() {
    EXPECT_EQ(StateOf(Stats()), before_);
    v1::BatchGetRequest get;
    v1::KeyToProto(stored_, get.add_keys());
    v1::BatchGetResponse got;
    ASSERT_TRUE(Call(&v1::KvStore::Stub::BatchGet, get, &got).ok());
    ASSERT_EQ(got.pages_size(), 1);
    EXPECT_EQ(got.pages(0).status(), v1::PAGE_STATUS_OK);
    EXPECT_EQ(got.pages(0).inline_data(), PageBytes(layout_, stored_));
  }

  PageKey NewKey(int i) const { return PageKey{.hash = chain_[1 + i], .layer = 0}; }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<v1::KvStore::Stub> stub_;
  PageLayout layout_ = SmallLayout();
  std::vector<Hash128> chain_;
  PageKey stored_;
  std::string before_;
};

TEST_F(ServerValidationTest, PutWithInvalidLayoutIsRejected) {
  const grpc::StatusCode kInvalid = grpc::StatusCode::INVALID_ARGUMENT;
  v1::BatchPutRequest request;
  *request.add_pages() = WirePage(layout_, NewKey(0));
  request.mutable_pages(0)->mutable_layout()->set_page_size(0);
  EXPECT_EQ(Put(request), kInvalid);
  request.mutable_pages(0)->mutable_layout()->set_page_size(2000);
  EXPECT_EQ(Put(request), kInvalid);
  *request.mutable_pages(0) = WirePage(layout_, NewKey(0));
  request.mutable_pages(0)->mutable_layout()->set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_EQ(Put(request), kInvalid);
  *request.mutable_pages(0) = WirePage(layout_, NewKey(0));
  request.mutable_pages(0)->mutable_layout()->set_arrangement(v1::ARRANGEMENT_UNSPECIFIED);
  EXPECT_EQ(Put(request), kInvalid);
  ExpectUnchanged();
}

TEST_F(ServerValidationTest, PutWithBytesNotMatchingTheLayoutIsRejected) {
  v1::BatchPutRequest request;
  *request.add_pages() = WirePage(layout_, NewKey(0));
  *request.add_pages() = WirePage(layout_, NewKey(1));
  std::string* data = request.mutable_pages(1)->mutable_inline_data();
  data->pop_back();
  v1::BatchPutResponse response;
  grpc::Status status = Call(&v1::KvStore::Stub::BatchPut, request, &response);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("pages[1].inline_data"), std::string::npos)
      << status.error_message();
  data->append("xy");
  EXPECT_EQ(Put(request), grpc::StatusCode::INVALID_ARGUMENT);
  ExpectUnchanged();
}

TEST_F(ServerValidationTest, OversizedEmptyAndDuplicateBatchesAreRejected) {
  v1::BatchPutRequest request;
  EXPECT_EQ(Put(request), grpc::StatusCode::INVALID_ARGUMENT);  // empty
  for (int i = 0; i <= kMaxBatch; ++i) *request.add_pages() = WirePage(layout_, NewKey(i));
  EXPECT_EQ(Put(request), grpc::StatusCode::INVALID_ARGUMENT);  // max + 1
  request.mutable_pages()->RemoveLast();
  *request.mutable_pages(3) = WirePage(layout_, NewKey(0));  // key twice
  EXPECT_EQ(Put(request), grpc::StatusCode::INVALID_ARGUMENT);

  v1::BatchGetRequest get;
  v1::BatchGetResponse got;
  EXPECT_EQ(Call(&v1::KvStore::Stub::BatchGet, get, &got).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  for (int i = 0; i <= kMaxBatch; ++i) v1::KeyToProto(NewKey(i), get.add_keys());
  EXPECT_EQ(Call(&v1::KvStore::Stub::BatchGet, get, &got).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::DeleteRequest del;
  for (int i = 0; i < kMaxBatch; ++i) v1::KeyToProto(NewKey(i), del.add_keys());
  v1::KeyToProto(stored_, del.add_keys());
  v1::DeleteResponse deleted;
  EXPECT_EQ(Call(&v1::KvStore::Stub::Delete, del, &deleted).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ExpectUnchanged();
}

TEST_F(ServerValidationTest, BadKeysAreRejectedByEveryRpc) {
  const std::string short_hash(15, 'k');
  v1::BatchPutRequest put;
  *put.add_pages() = WirePage(layout_, NewKey(0));
  put.mutable_pages(0)->mutable_key()->set_hash(short_hash);
  EXPECT_EQ(Put(put), grpc::StatusCode::INVALID_ARGUMENT);

  v1::BatchGetRequest get;
  v1::KeyToProto(stored_, get.add_keys());
  get.add_keys()->set_hash(std::string(17, 'k'));
  v1::BatchGetResponse got;
  EXPECT_EQ(Call(&v1::KvStore::Stub::BatchGet, get, &got).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::DeleteRequest del;
  v1::KeyToProto(stored_, del.add_keys());
  del.add_keys()->set_hash("");
  del.set_force(true);
  v1::DeleteResponse deleted;
  EXPECT_EQ(Call(&v1::KvStore::Stub::Delete, del, &deleted).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::PinRequest pin;
  v1::KeyToProto(stored_, pin.add_keys());
  pin.add_keys()->set_hash(short_hash);
  pin.set_ttl_ms(1000);
  v1::PinResponse pinned;
  EXPECT_EQ(Call(&v1::KvStore::Stub::Pin, pin, &pinned).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  v1::LookupRequest lookup;
  lookup.add_chain(stored_.hash.CanonicalString());
  lookup.add_chain(short_hash);
  v1::LookupResponse found;
  EXPECT_EQ(Call(&v1::KvStore::Stub::Lookup, lookup, &found).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ExpectUnchanged();
}

TEST_F(ServerValidationTest, ChecksumMismatchIsDataLossAndTheBatchIsAtomic) {
  v1::BatchPutRequest request;
  *request.add_pages() = WirePage(layout_, NewKey(0));
  *request.add_pages() = WirePage(layout_, NewKey(1));
  request.mutable_pages(1)->set_checksum(request.pages(1).checksum() ^ 1);
  EXPECT_EQ(Put(request), grpc::StatusCode::DATA_LOSS);
  ExpectUnchanged();
  // The good page of the failed batch was not stored.
  v1::BatchGetRequest get;
  v1::KeyToProto(NewKey(0), get.add_keys());
  v1::BatchGetResponse got;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::BatchGet, get, &got).ok());
  EXPECT_EQ(got.pages(0).status(), v1::PAGE_STATUS_NOT_FOUND);
}

TEST_F(ServerValidationTest, UnknownKeyIsNotFoundPerPage) {
  v1::BatchGetRequest get;
  v1::KeyToProto(NewKey(2), get.add_keys());
  v1::KeyToProto(stored_, get.add_keys());
  v1::BatchGetResponse got;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::BatchGet, get, &got).ok());
  ASSERT_EQ(got.pages_size(), 2);
  EXPECT_EQ(got.pages(0).status(), v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ(got.pages(0).inline_data(), "");
  EXPECT_EQ(got.pages(1).status(), v1::PAGE_STATUS_OK);
  const v1::StatsResponse stats = Stats();
  EXPECT_EQ(stats.get_misses(), 1u);
  EXPECT_EQ(StateOf(stats), before_);

  // Deleting an unknown key is not an error and deletes nothing.
  v1::DeleteRequest del;
  v1::KeyToProto(NewKey(2), del.add_keys());
  v1::DeleteResponse deleted;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Delete, del, &deleted).ok());
  EXPECT_EQ(deleted.deleted_pages(), 0u);
  ExpectUnchanged();
}

TEST_F(ServerValidationTest, LookupLimits) {
  v1::LookupRequest lookup;
  for (int i = 0; i <= kMaxLookup; ++i) lookup.add_chain(stored_.hash.CanonicalString());
  v1::LookupResponse found;
  EXPECT_EQ(Call(&v1::KvStore::Stub::Lookup, lookup, &found).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  lookup.mutable_chain()->RemoveLast();
  lookup.set_layer_begin(UINT32_MAX);
  lookup.set_layer_count(2);
  EXPECT_EQ(Call(&v1::KvStore::Stub::Lookup, lookup, &found).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  lookup.set_layer_begin(0);
  lookup.set_layer_count(0);  // means 1
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Lookup, lookup, &found).ok());
  EXPECT_EQ(found.prefix_pages(), static_cast<uint32_t>(kMaxLookup));
  EXPECT_EQ(found.tiers_size(), kMaxLookup);
  ExpectUnchanged();
}

// The server's defaults: a chain and a layer count each within bounds whose
// product is not is refused before any work (65,536 pages x 4,096 layers
// would be 2^28 entries from a 1.1 MiB request).
TEST(ServerLookupBoundTest, ChainTimesLayersIsBoundedByDefault) {
  TempDir dir;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server =
      ServerProcess::Start({"--data_dir=" + dir.path() + "/data"}, dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  auto stub = v1::KvStore::NewStub(
      grpc::CreateChannel((*server)->target(), grpc::InsecureChannelCredentials()));
  v1::LookupRequest lookup;
  const std::string hash = Hash128{.hi = 1, .lo = 2}.CanonicalString();
  for (int i = 0; i < 65536; ++i) lookup.add_chain(hash);
  lookup.set_layer_count(4096);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  v1::LookupResponse found;
  const grpc::Status status = stub->Lookup(&context, lookup, &found);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  EXPECT_THAT(status.error_message(), ::testing::HasSubstr("max_lookup_entries"));
  lookup.set_layer_count(16);  // 2^20 entries: the default bound, served
  grpc::ClientContext again;
  again.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
  const grpc::Status ok = stub->Lookup(&again, lookup, &found);
  ASSERT_TRUE(ok.ok()) << ok.error_message();
  EXPECT_EQ(found.prefix_pages(), 0u);
  EXPECT_EQ(found.tiers_size(), 65536 * 16);
}

TEST_F(ServerValidationTest, PinAndUnpinErrors) {
  v1::PinRequest pin;
  v1::KeyToProto(stored_, pin.add_keys());
  v1::PinResponse pinned;
  pin.set_ttl_ms(0);
  EXPECT_EQ(Call(&v1::KvStore::Stub::Pin, pin, &pinned).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  pin.set_ttl_ms(kMaxTtlMs + 1);
  EXPECT_EQ(Call(&v1::KvStore::Stub::Pin, pin, &pinned).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  pin.set_ttl_ms(1000);
  v1::KeyToProto(NewKey(3), pin.add_keys());  // not stored: nothing is pinned
  EXPECT_EQ(Call(&v1::KvStore::Stub::Pin, pin, &pinned).error_code(),
            grpc::StatusCode::NOT_FOUND);
  pin.mutable_keys()->RemoveLast();
  pin.set_pin_id(std::string(16, '\x5a'));  // unknown pin to extend
  EXPECT_EQ(Call(&v1::KvStore::Stub::Pin, pin, &pinned).error_code(),
            grpc::StatusCode::NOT_FOUND);
  pin.set_pin_id("not-16-bytes");
  EXPECT_EQ(Call(&v1::KvStore::Stub::Pin, pin, &pinned).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::UnpinRequest unpin;
  v1::UnpinResponse unpinned;
  unpin.set_pin_id(std::string(16, '\x5a'));
  EXPECT_EQ(Call(&v1::KvStore::Stub::Unpin, unpin, &unpinned).error_code(),
            grpc::StatusCode::NOT_FOUND);
  unpin.set_pin_id("");
  EXPECT_EQ(Call(&v1::KvStore::Stub::Unpin, unpin, &unpinned).error_code(),
            grpc::StatusCode::NOT_FOUND);
  unpin.set_pin_id(std::string(15, '\x5a'));
  EXPECT_EQ(Call(&v1::KvStore::Stub::Unpin, unpin, &unpinned).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  ExpectUnchanged();
  EXPECT_EQ(Stats().active_pins(), 0u);
}

TEST_F(ServerValidationTest, DeletingAPinnedPageNeedsForce) {
  v1::PinRequest pin;
  v1::KeyToProto(stored_, pin.add_keys());
  pin.set_ttl_ms(kMaxTtlMs);
  v1::PinResponse pinned;
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Pin, pin, &pinned).ok());
  before_ = StateOf(Stats());
  v1::DeleteRequest del;
  v1::KeyToProto(stored_, del.add_keys());
  v1::DeleteResponse deleted;
  EXPECT_EQ(Call(&v1::KvStore::Stub::Delete, del, &deleted).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  ExpectUnchanged();
  del.set_force(true);
  ASSERT_TRUE(Call(&v1::KvStore::Stub::Delete, del, &deleted).ok());
  EXPECT_EQ(deleted.deleted_pages(), 1u);
  const v1::StatsResponse stats = Stats();
  EXPECT_EQ(stats.ram().pages() + stats.disk().pages(), 0u);
  EXPECT_EQ(stats.ram().pinned_pages(), 0u);
}

}  // namespace
}  // namespace kvtier::testing
