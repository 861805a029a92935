// KvStoreService without gRPC: requests are converted into exactly the
// Store calls they stand for, results are converted back field by field,
// and a request that fails validation never reaches the Store.
#include "kvstore/service/service.h"
#include "kvtier/v1/data_plane.h"
#include "ucx/message.h"

#include <string>
#include <vector>

#include "common/checksum.h"
#include "grpcpp/grpcpp.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/access/access_table.h"
#include "kvstore/service/service_test_store.h"
#include "kvstore/service/tenants.h"
#include "kvtier/v1/convert.h"

namespace kvtier::store {
namespace {

using testing::FakeStore;

const Caller kAnon = Caller::Anonymous();

class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest() : service_(&store_, Limits()) {}
  static ServiceLimits Limits() {
    ServiceLimits l;
    l.max_batch_pages = 2;
    l.max_lookup_pages = 3;
    l.max_lookup_layers = 4;
    l.max_lookup_entries = 6;
    l.max_pin_ttl_ms = 100;
    return l;
  }
  static PageKey Key(uint64_t i) { return PageKey{.hash = {.hi = i, .lo = i + 1}, .layer = 2}; }
  static PageLayout Layout() { return PageLayout{.page_size = 16, .n_kv_heads = 1, .head_dim = 8}; }
  static v1::PutPage Page(uint64_t i) {
    v1::PutPage p;
    v1::KeyToProto(Key(i), p.mutable_key());
    v1::LayoutToProto(Layout(), p.mutable_layout());
    p.set_inline_data(std::string(Layout().PageBytes(), static_cast<char>('a' + i)));
    p.set_checksum(PageChecksum(p.inline_data().data(), p.inline_data().size()));
    return p;
  }

  FakeStore store_;
  KvStoreService service_;
};

TEST_F(ServiceTest, PutCopiesBytesAndConvertsResults) {
  v1::BatchPutRequest req;
  *req.add_pages() = Page(1);
  *req.add_pages() = Page(2);
  v1::BatchPutResponse resp;
  ASSERT_TRUE(service_.DoBatchPut(kAnon, req, &resp).ok());
  ASSERT_EQ(store_.committed.size(), 2u);
  EXPECT_EQ(store_.committed[1].key, Key(2));
  EXPECT_EQ(store_.committed[1].layout, Layout());
  EXPECT_EQ(store_.committed[1].checksum, req.pages(1).checksum());
  EXPECT_EQ(store_.buffers[0], req.pages(0).inline_data());
  ASSERT_EQ(resp.results_size(), 2);
  EXPECT_FALSE(resp.results(0).already_present());
  EXPECT_TRUE(resp.results(1).already_present());
}

TEST_F(ServiceTest, BadPutsNeverReachTheStore) {
  std::vector<v1::BatchPutRequest> bad(6);
  // [0] empty.
  *bad[1].add_pages() = Page(1);  // [1] three pages, limit 2
  *bad[1].add_pages() = Page(2);
  *bad[1].add_pages() = Page(3);
  *bad[2].add_pages() = Page(1);  // [2] key twice
  *bad[2].add_pages() = Page(1);
  *bad[3].add_pages() = Page(1);  // [3] short hash
  bad[3].mutable_pages(0)->mutable_key()->set_hash("short");
  *bad[4].add_pages() = Page(1);  // [4] one byte too many
  bad[4].mutable_pages(0)->mutable_inline_data()->push_back('x');
  *bad[5].add_pages() = Page(1);  // [5] head_dim 0
  bad[5].mutable_pages(0)->mutable_layout()->set_head_dim(0);
  for (size_t i = 0; i < bad.size(); ++i) {
    v1::BatchPutResponse resp;
    EXPECT_EQ(service_.DoBatchPut(kAnon, bad[i], &resp).code(), absl::StatusCode::kInvalidArgument)
        << i;
    EXPECT_EQ(resp.results_size(), 0);
  }
  EXPECT_EQ(store_.calls, 0);
}

TEST_F(ServiceTest, GetMapsPerPageStatuses) {
  store_.get_statuses = {absl::OkStatus(), absl::NotFoundError("x"), absl::DataLossError("y")};
  // A batch of 2 is the limit; the third status is checked with a second call.
  v1::BatchGetRequest req;
  v1::KeyToProto(Key(1), req.add_keys());
  v1::KeyToProto(Key(2), req.add_keys());
  v1::BatchGetResponse resp;
  ASSERT_TRUE(service_.DoBatchGet(kAnon, req, &resp).ok());
  ASSERT_EQ(resp.pages_size(), 2);
  EXPECT_EQ(resp.pages(0).status(), v1::PAGE_STATUS_OK);
  EXPECT_EQ(resp.pages(0).inline_data(), "0123456789");
  EXPECT_EQ(resp.pages(0).checksum(), 99u);
  EXPECT_EQ(resp.pages(0).tier(), v1::TIER_DISK);
  EXPECT_EQ(resp.pages(0).layout().head_dim(), 8u);
  EXPECT_EQ(resp.pages(1).status(), v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ(resp.pages(1).inline_data(), "");
  EXPECT_EQ(resp.pages(1).key().layer(), 2u);
  store_.get_statuses = {absl::OkStatus(), absl::DataLossError("y")};
  resp.Clear();
  ASSERT_TRUE(service_.DoBatchGet(kAnon, req, &resp).ok());
  EXPECT_EQ(resp.pages(1).status(), v1::PAGE_STATUS_LOST);
  // An error that is no per-page outcome fails the call.
  store_.get_statuses = {absl::OkStatus(), absl::UnavailableError("disk gone")};
  resp.Clear();
  EXPECT_EQ(service_.DoBatchGet(kAnon, req, &resp).code(), absl::StatusCode::kUnavailable);
}

// Data-plane get fields on a server without a data plane, and together.
TEST_F(ServiceTest, ArenaGetsNeedADataPlaneAndExcludeARegion) {
  const std::string session = wire::SessionId{.hi = 1, .lo = 7}.Bytes();
  v1::BatchGetRequest req;
  v1::KeyToProto(Key(1), req.add_keys());
  req.set_arena_session_id(session);
  v1::BatchGetResponse resp;
  EXPECT_EQ(service_.DoBatchGet(kAnon, req, &resp).code(), absl::StatusCode::kFailedPrecondition);
  req.mutable_region()->set_session_id(session);
  EXPECT_EQ(service_.DoBatchGet(kAnon, req, &resp).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resp.pages_size(), 0);
}

// Request messages name a known op, parse, and read their own session's
// arena; anything else is refused before the store is read.
TEST_F(ServiceTest, RequestMessagesAreValidated) {
  const wire::SessionId session{.hi = 1, .lo = 7};
  v1::BatchGetRequest req;
  v1::KeyToProto(Key(1), req.add_keys());
  req.set_arena_session_id(session.Bytes());
  const std::string bytes = req.SerializeAsString();
  EXPECT_EQ(service_.ServeMessage(session, 99, bytes).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(service_.ServeMessage(session, wire::kMappedGetOp, "\xff\xff").status().code(),
            absl::StatusCode::kInvalidArgument);
  // Another session's get, by either half of the id.
  for (const wire::SessionId other : {wire::SessionId{.hi = 1, .lo = 8},
                                      wire::SessionId{.hi = 2, .lo = 7}}) {
    EXPECT_EQ(service_.ServeMessage(other, wire::kMappedGetOp, bytes).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  req.add_keys();  // an empty key
  EXPECT_EQ(
      service_.ServeMessage(session, wire::kMappedGetOp, req.SerializeAsString()).status().code(),
      absl::StatusCode::kInvalidArgument);
  // A valid one reaches the data plane, which this service lacks.
  EXPECT_EQ(service_.ServeMessage(session, wire::kMappedGetOp, bytes).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_.calls, 0);
}

TEST_F(ServiceTest, LookupConvertsChainAndTiers) {
  v1::LookupRequest req;
  req.add_chain(Key(1).hash.CanonicalString());
  req.add_chain(Key(2).hash.CanonicalString());
  req.set_layer_begin(5);
  req.set_layer_count(0);  // means 1
  v1::LookupResponse resp;
  ASSERT_TRUE(service_.DoLookup(kAnon, req, &resp).ok());
  EXPECT_THAT(store_.lookup_chain, ::testing::ElementsAre(Key(1).hash, Key(2).hash));
  EXPECT_EQ(store_.lookup_layers, std::make_pair(5u, 1u));
  EXPECT_EQ(resp.prefix_pages(), 1u);
  EXPECT_THAT(resp.tiers(), ::testing::ElementsAre(v1::TIER_RAM, v1::TIER_DISK));

  const int calls = store_.calls;
  v1::LookupRequest too_long = req;
  for (int i = 0; i < 2; ++i) too_long.add_chain(Key(9).hash.CanonicalString());
  EXPECT_EQ(service_.DoLookup(kAnon, too_long, &resp).code(), absl::StatusCode::kInvalidArgument);
  v1::LookupRequest many_layers = req;
  many_layers.set_layer_count(5);
  EXPECT_EQ(service_.DoLookup(kAnon, many_layers, &resp).code(), absl::StatusCode::kInvalidArgument);
  v1::LookupRequest overflow = req;
  overflow.set_layer_begin(UINT32_MAX);
  overflow.set_layer_count(2);
  EXPECT_EQ(service_.DoLookup(kAnon, overflow, &resp).code(), absl::StatusCode::kInvalidArgument);
  // 3 pages and 4 layers are each within their bounds, 12 entries are not;
  // refused before a key is decoded (the last one is not a key at all).
  v1::LookupRequest product = req;
  product.add_chain("not a key");
  product.set_layer_count(4);
  absl::Status refused = service_.DoLookup(kAnon, product, &resp);
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.message(), ::testing::HasSubstr("max_lookup_entries"));
  product.set_layer_count(2);  // 6 entries: the bad key is what is refused
  EXPECT_THAT(service_.DoLookup(kAnon, product, &resp).message(), ::testing::HasSubstr("chain[2]"));
  EXPECT_EQ(store_.calls, calls);
}

TEST_F(ServiceTest, PinValidatesTtlAndKeys) {
  v1::PinRequest req;
  v1::KeyToProto(Key(1), req.add_keys());
  v1::PinResponse resp;
  req.set_ttl_ms(0);
  EXPECT_EQ(service_.DoPin(kAnon, req, &resp).code(), absl::StatusCode::kInvalidArgument);
  req.set_ttl_ms(101);
  EXPECT_EQ(service_.DoPin(kAnon, req, &resp).code(), absl::StatusCode::kInvalidArgument);
  v1::PinRequest empty;
  empty.set_ttl_ms(10);
  EXPECT_EQ(service_.DoPin(kAnon, empty, &resp).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_.calls, 0);
  req.set_ttl_ms(100);
  ASSERT_TRUE(service_.DoPin(kAnon, req, &resp).ok());
  EXPECT_EQ(resp.pin_id(), FakeStore::kPin.Bytes());
  EXPECT_EQ(store_.pin_args, std::make_tuple(size_t{1}, uint64_t{100}, PinId{}));
  empty.set_pin_id(FakeStore::kPin.Bytes());  // extending with no keys is allowed
  ASSERT_TRUE(service_.DoPin(kAnon, empty, &resp).ok());
  EXPECT_EQ(store_.pin_args, std::make_tuple(size_t{0}, uint64_t{10}, FakeStore::kPin));
  const int calls = store_.calls;
  empty.set_pin_id("short");
  EXPECT_EQ(service_.DoPin(kAnon, empty, &resp).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_.calls, calls);

  v1::UnpinRequest unpin;
  EXPECT_EQ(service_.DoUnpin(kAnon, unpin).code(), absl::StatusCode::kNotFound);  // empty id
  unpin.set_pin_id(std::string(17, 'x'));
  EXPECT_EQ(service_.DoUnpin(kAnon, unpin).code(), absl::StatusCode::kInvalidArgument);
  unpin.set_pin_id(FakeStore::kPin.Bytes());
  EXPECT_TRUE(service_.DoUnpin(kAnon, unpin).ok());
  unpin.set_pin_id(PinId{.hi = 5, .lo = 5}.Bytes());
  EXPECT_EQ(service_.DoUnpin(kAnon, unpin).code(), absl::StatusCode::kNotFound);
}

TEST_F(ServiceTest, DeletePassesForceAndAcceptsEmpty) {
  v1::DeleteRequest req;
  v1::DeleteResponse resp;
  ASSERT_TRUE(service_.DoDelete(kAnon, req, &resp).ok());
  EXPECT_EQ(resp.deleted_pages(), 0u);
  EXPECT_EQ(store_.calls, 0);
  v1::KeyToProto(Key(1), req.add_keys());
  req.set_force(true);
  ASSERT_TRUE(service_.DoDelete(kAnon, req, &resp).ok());
  EXPECT_EQ(resp.deleted_pages(), 1u);
  EXPECT_TRUE(store_.delete_force);
}

TEST_F(ServiceTest, StatsCopiesEveryField) {
  v1::StatsResponse s;
  ASSERT_TRUE(service_.DoStats(&s).ok());
  EXPECT_EQ(s.ram().pages(), 1u);
  EXPECT_EQ(s.ram().used_bytes(), 2u);
  EXPECT_EQ(s.ram().capacity_bytes(), 3u);
  EXPECT_EQ(s.ram().high_watermark_bytes(), 4u);
  EXPECT_EQ(s.ram().low_watermark_bytes(), 5u);
  EXPECT_EQ(s.ram().hits(), 6u);
  EXPECT_EQ(s.ram().evictions(), 7u);
  EXPECT_EQ(s.ram().pinned_pages(), 8u);
  EXPECT_EQ(s.disk().pages(), 11u);
  EXPECT_EQ(s.disk().pinned_pages(), 18u);
  EXPECT_EQ(s.put_pages(), 21u);
  EXPECT_EQ(s.put_duplicate_pages(), 22u);
  EXPECT_EQ(s.get_misses(), 23u);
  EXPECT_EQ(s.lost_pages(), 24u);
  EXPECT_EQ(s.demotions(), 25u);
  EXPECT_EQ(s.promotions(), 26u);
  EXPECT_EQ(s.dropped_pages(), 27u);
  EXPECT_EQ(s.reserved_bytes(), 28u);
  EXPECT_EQ(s.active_pins(), 29u);
  EXPECT_EQ(s.lookups(), 30u);
  EXPECT_EQ(s.quarantined_bytes(), 31u);
  EXPECT_EQ(s.unverified_disk_pages(), 32u);
  EXPECT_EQ(s.set_aside_files(), 33u);
  ASSERT_EQ(s.tenants_size(), 3);
  const v1::TenantStats& t = s.tenants(0);
  EXPECT_EQ(t.tenant(), "anonymous");
  EXPECT_EQ(t.ram_bytes(), 41u);
  EXPECT_EQ(t.disk_bytes(), 42u);
  EXPECT_EQ(t.ram_pages(), 43u);
  EXPECT_EQ(t.disk_pages(), 44u);
  EXPECT_EQ(t.pins(), 45u);
  EXPECT_EQ(t.pinned_bytes(), 46u);
  EXPECT_EQ(t.max_ram_bytes(), 47u);
  EXPECT_EQ(t.max_disk_bytes(), 48u);
  EXPECT_EQ(t.max_pins(), 49u);
  EXPECT_EQ(t.max_pinned_bytes(), 50u);
  EXPECT_EQ(t.quota_refusals(), 51u);
  // Without an access table no tag has a name.
  EXPECT_EQ(s.tenants(1).tenant(), "tag:0123456789abcdef");
  EXPECT_EQ(s.tenants(2).tenant(), "shared");
}

}  // namespace
}  // namespace kvtier::store
