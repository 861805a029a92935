// KvStoreService without gRPC: requests are converted into exactly the
// Store calls they stand for, results are converted back field by field,
// and a request that fails validation never reaches the Store.
#include "kvstore/service/service.h"
#include "kvtier/v1/data_plane.h"
#include "ucx/message.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/checksum.h"
#include "grpcpp/grpcpp.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/access/access_table.h"
#include "kvstore/service/tenants.h"
#include "kvtier/v1/convert.h"

namespace kvtier::store {
namespace {

const Caller kAnon = Caller::Anonymous();

// Records every call; answers with canned results.
class FakeStore final : public Store {
 public:
  absl::StatusOr<LookupResult> Lookup(uint64_t tenant, absl::Span<const Hash128> chain,
                                      uint32_t layer_begin, uint32_t layer_count) override {
    ++calls;
    lookup_tenant = tenant;
    lookup_chain.assign(chain.begin(), chain.end());
    lookup_layers = {layer_begin, layer_count};
    LookupResult r;
    r.prefix_pages = 1;
    for (size_t i = 0; i < chain.size() * layer_count; ++i) {
      r.tiers.push_back(i == 0 ? Tier::kRam : i == 1 ? Tier::kDisk : Tier::kNone);
    }
    return r;
  }
  StoredBytes BytesOf(absl::Span<const PageKey>) const override { return stored_bytes; }
  using Store::Reserve;
  absl::StatusOr<Reservation> Reserve(absl::Span<const PutSpec> specs,
                                      const ReserveOptions&) override {
    ++calls;
    buffers.assign(specs.size(), std::string());
    std::vector<absl::Span<uint8_t>> spans;
    for (size_t i = 0; i < specs.size(); ++i) {
      buffers[i].resize(specs[i].layout.PageBytes());
      spans.emplace_back(reinterpret_cast<uint8_t*>(buffers[i].data()), buffers[i].size());
    }
    return MakeReservation(this, 7, std::vector<PutSpec>(specs.begin(), specs.end()), spans);
  }
  absl::StatusOr<std::vector<PutResult>> Commit(Reservation reservation) override {
    ++calls;
    for (size_t i = 0; i < reservation.size(); ++i) committed.push_back(reservation.spec(i));
    DisarmReservation(reservation);
    std::vector<PutResult> out(reservation.size());
    out.back().already_present = true;
    return out;
  }
  void Abort(Reservation reservation) override { DisarmReservation(reservation); }
  absl::StatusOr<std::vector<GetResult>> BatchGet(absl::Span<const PageKey> keys) override {
    ++calls;
    std::vector<GetResult> out(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) out[i].status = get_statuses[i % get_statuses.size()];
    out[0].layout = PageLayout{.page_size = 16, .n_kv_heads = 1, .head_dim = 8};
    out[0].data = "0123456789";
    out[0].checksum = 99;
    out[0].tier = Tier::kDisk;
    return out;
  }
  absl::StatusOr<uint32_t> Delete(absl::Span<const PageKey> keys, bool force) override {
    ++calls;
    delete_force = force;
    return static_cast<uint32_t>(keys.size());
  }
  absl::StatusOr<PinId> Pin(uint64_t tenant, absl::Span<const PageKey> keys, uint64_t ttl_ms,
                            const PinId& pin_id) override {
    ++calls;
    pin_args = {keys.size(), ttl_ms, pin_id};
    pin_tenant = tenant;
    return kPin;
  }
  absl::StatusOr<uint64_t> DemoteAll(absl::Time) override { return 0; }
  absl::Status Unpin(uint64_t tenant, const PinId& pin_id) override {
    ++calls;
    pin_tenant = tenant;
    return pin_id == kPin ? absl::OkStatus() : absl::NotFoundError("no pin");
  }
  std::vector<HeldPage> HeldPages(bool /*pinned_only*/) const override { return {}; }
  StoreStats Stats() const override {
    StoreStats s;
    s.ram = {1, 2, 3, 4, 5, 6, 7, 8};
    s.disk = {11, 12, 13, 14, 15, 16, 17, 18};
    s.put_pages = 21;
    s.put_duplicate_pages = 22;
    s.get_misses = 23;
    s.lost_pages = 24;
    s.demotions = 25;
    s.promotions = 26;
    s.dropped_pages = 27;
    s.reserved_bytes = 28;
    s.active_pins = 29;
    s.lookups = 30;
    s.quarantined_bytes = 31;
    s.unverified_disk_pages = 32;
    s.set_aside_files = 33;
    TenantStats t;
    t.tenant = access::kAnonymousTag;
    t.ram_bytes = 41;
    t.disk_bytes = 42;
    t.ram_pages = 43;
    t.disk_pages = 44;
    t.pins = 45;
    t.pinned_bytes = 46;
    t.quotas.max_ram_bytes = 47;
    t.quotas.max_disk_bytes = 48;
    t.quotas.max_pins = 49;
    t.quotas.max_pinned_bytes = 50;
    t.quota_refusals = 51;
    s.tenants.push_back(t);
    for (uint64_t tag : {uint64_t{0x0123456789abcdef}, access::kSharedTag}) {
      s.tenants.emplace_back();
      s.tenants.back().tenant = tag;
    }
    return s;
  }
  void SetTenantQuotas(absl::flat_hash_map<uint64_t, TenantQuotas> quotas) override {
    tenant_quotas = std::move(quotas);
  }

  static constexpr PinId kPin{.hi = 0x1234, .lo = 0x5678};
  int calls = 0;
  uint64_t lookup_tenant = 99;
  uint64_t pin_tenant = 99;
  std::vector<Hash128> lookup_chain;
  std::pair<uint32_t, uint32_t> lookup_layers;
  std::vector<std::string> buffers;
  std::vector<PutSpec> committed;
  std::vector<absl::Status> get_statuses = {absl::OkStatus()};
  bool delete_force = false;
  std::tuple<size_t, uint64_t, PinId> pin_args;
  StoredBytes stored_bytes = {.ram = 10};  // what BatchGet returns
  absl::flat_hash_map<uint64_t, TenantQuotas> tenant_quotas;

 protected:
  void AbortById(uint64_t) override {}
};

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
  v1::BatchGetRequest req;
  v1::KeyToProto(Key(1), req.add_keys());
  req.set_arena_session_id(7);
  v1::BatchGetResponse resp;
  EXPECT_EQ(service_.DoBatchGet(kAnon, req, &resp).code(), absl::StatusCode::kFailedPrecondition);
  req.mutable_region()->set_session_id(7);
  EXPECT_EQ(service_.DoBatchGet(kAnon, req, &resp).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(resp.pages_size(), 0);
}

// Request messages name a known op, parse, and read their own session's
// arena; anything else is refused before the store is read.
TEST_F(ServiceTest, RequestMessagesAreValidated) {
  v1::BatchGetRequest req;
  v1::KeyToProto(Key(1), req.add_keys());
  req.set_arena_session_id(7);
  const std::string bytes = req.SerializeAsString();
  EXPECT_EQ(service_.ServeMessage(7, 99, bytes).status().code(),
            absl::StatusCode::kUnimplemented);
  EXPECT_EQ(service_.ServeMessage(7, wire::kMappedGetOp, "\xff\xff").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(service_.ServeMessage(8, wire::kMappedGetOp, bytes).status().code(),
            absl::StatusCode::kInvalidArgument);
  req.add_keys();  // an empty key
  EXPECT_EQ(service_.ServeMessage(7, wire::kMappedGetOp, req.SerializeAsString()).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A valid one reaches the data plane, which this service lacks.
  EXPECT_EQ(service_.ServeMessage(7, wire::kMappedGetOp, bytes).status().code(),
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

// The access file's quotas over the server's defaults, key by key; and the
// names Stats gives tags.
TEST(TenantsTest, QuotasOfTheAccessFileOverTheDefaults) {
  absl::StatusOr<access::AccessTable> table = access::AccessTable::Parse(
      "tenant=acme role=tenant cert_cn=a max_ram_bytes=4096\n"
      "tenant=acme role=tenant cert_cn=b max_pins=0 max_ram_bytes=4096\n"
      "tenant=globex role=tenant cert_cn=g\n"
      "tenant=initech role=tenant cert_cn=i max_disk_bytes=0 max_pinned_bytes=7\n",
      "access.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  TenantQuotas defaults;
  defaults.max_ram_bytes = 1;
  defaults.max_disk_bytes = 2;
  defaults.max_pins = 3;
  defaults.max_pinned_bytes = 4;
  const absl::flat_hash_map<uint64_t, TenantQuotas> quotas = TenantQuotasOf(*table, defaults);
  ASSERT_EQ(quotas.size(), 2u);  // globex has none of its own
  TenantQuotas acme = defaults;
  acme.max_ram_bytes = 4096;
  acme.max_pins = 0;
  EXPECT_EQ(quotas.at(access::TenantTag("acme")), acme);
  TenantQuotas initech = defaults;
  initech.max_disk_bytes = 0;
  initech.max_pinned_bytes = 7;
  EXPECT_EQ(quotas.at(access::TenantTag("initech")), initech);

  StoreOptions options;
  options.tenant_max_ram_bytes = 1;
  FakeStore store;
  ApplyTenantQuotas(*table, options, &store);
  EXPECT_EQ(store.tenant_quotas.size(), 2u);
  EXPECT_EQ(store.tenant_quotas.at(access::TenantTag("acme")).max_ram_bytes, 4096u);
  EXPECT_EQ(store.tenant_quotas.at(access::TenantTag("initech")).max_ram_bytes, 1u);

  EXPECT_EQ(TenantLabel(&*table, access::TenantTag("globex")), "globex");
  EXPECT_EQ(TenantLabel(&*table, access::kAnonymousTag), "anonymous");
  EXPECT_EQ(TenantLabel(&*table, access::kSharedTag), "shared");
  EXPECT_EQ(TenantLabel(&*table, 0xab), "tag:00000000000000ab");
  EXPECT_EQ(TenantLabel(nullptr, access::TenantTag("globex")),
            absl::StrFormat("tag:%016x", access::TenantTag("globex")));
}

// Store's own BatchGetInPlace (the one a store without an arena keeps):
// BatchGet, then every OK page's copy handed to the callback.
TEST(StoreDefaultTest, BatchGetInPlaceHandsOverTheCopies) {
  FakeStore store;
  store.get_statuses = {absl::OkStatus(), absl::NotFoundError("gone")};
  const std::vector<PageKey> keys = {PageKey{.layer = 1}, PageKey{.layer = 2}};
  int calls = 0;
  auto got = store.BatchGetInPlace(keys, [&](absl::Span<const GetResult> results,
                                             absl::Span<const absl::Span<const uint8_t>> bytes) {
    ++calls;
    EXPECT_EQ(bytes.size(), 2u);
    EXPECT_EQ(std::string(bytes[0].begin(), bytes[0].end()), "0123456789");
    EXPECT_EQ(static_cast<const void*>(bytes[0].data()), results[0].data.data());
    EXPECT_TRUE(bytes[1].empty());
    return absl::OkStatus();
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(calls, 1);
  EXPECT_EQ((*got)[0].data, "0123456789");
  EXPECT_EQ((*got)[1].status.code(), absl::StatusCode::kNotFound);
  auto failed = store.BatchGetInPlace(keys, [](auto, auto) { return absl::AbortedError("x"); });
  EXPECT_EQ(failed.status(), absl::AbortedError("x"));
}

// Over gRPC: the calls that wait on UCX (region transfers, commits,
// opening and closing sessions) run on the service's waiting pool, never on
// a gRPC callback thread; the others run inline.
TEST(ServiceThreadsTest, CallsThatWaitOnUcxRunOnTheWaitingPool) {
  FakeStore store;
  KvStoreService service(&store, ServiceLimits());
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = v1::KvStore::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port),
                                                       grpc::InsecureChannelCredentials()));
  auto code = [](const grpc::Status& s) { return s.error_code(); };
  {
    grpc::ClientContext context;
    v1::BatchGetRequest request;
    v1::KeyToProto(PageKey{.hash = {.hi = 1, .lo = 2}}, request.add_keys());
    v1::BatchGetResponse response;
    EXPECT_EQ(code(stub->BatchGet(&context, request, &response)), grpc::StatusCode::OK);
    EXPECT_EQ(service.waiting().started(), 0u);
    request.mutable_region()->set_address(4096);
    request.mutable_region()->set_bytes(4096);
    grpc::ClientContext region_context;
    // No data plane here: answered FAILED_PRECONDITION, from the pool.
    EXPECT_EQ(code(stub->BatchGet(&region_context, request, &response)),
              grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(service.waiting().started(), 1u);
  }
  {
    grpc::ClientContext context;
    v1::CommitPutRequest request;
    v1::BatchPutResponse response;
    EXPECT_EQ(code(stub->CommitPut(&context, request, &response)),
              grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(service.waiting().started(), 2u);
  }
  {
    grpc::ClientContext context;
    v1::OpenDataPlaneRequest request;
    v1::OpenDataPlaneResponse response;
    EXPECT_EQ(code(stub->OpenDataPlane(&context, request, &response)),
              grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(service.waiting().started(), 3u);
  }
  {
    grpc::ClientContext context;
    v1::ReservePutRequest request;
    v1::ReservePutResponse response;
    EXPECT_EQ(code(stub->ReservePut(&context, request, &response)),
              grpc::StatusCode::FAILED_PRECONDITION);
    EXPECT_EQ(service.waiting().started(), 3u);  // inline: posting waits on nothing
  }
  server->Shutdown();
}

TEST(ServiceLimitsTest, FromStoreOptionsAndValidate) {
  StoreOptions o;
  o.max_batch_pages = 9;
  o.max_lookup_pages = 10;
  o.max_lookup_entries = 12;
  o.max_pin_ttl_ms = 11;
  ServiceLimits l = ServiceLimits::FromStoreOptions(o);
  EXPECT_EQ(l.max_batch_pages, 9u);
  EXPECT_EQ(l.max_lookup_pages, 10u);
  EXPECT_EQ(l.max_lookup_entries, 12u);
  EXPECT_EQ(l.max_pin_ttl_ms, 11u);
  EXPECT_EQ(l.max_lookup_layers, Store::kMaxLookupLayers);
  EXPECT_TRUE(l.Validate().ok());
  l.max_batch_pages = 0;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l.max_batch_pages = 9;
  l.max_lookup_entries = 0;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l.max_lookup_entries = 12;
  l.max_inflight_bytes = 0;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l.max_inflight_bytes = 1;
  l.waiting_threads = 0;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l.waiting_threads = 1;
  l.max_waiting_requests = 0;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
}

// Inline puts and gets take their page bytes from max_inflight_bytes for
// as long as gRPC holds the request or reply; one that does not fit beside
// the others is RESOURCE_EXHAUSTED and never reaches the store.
TEST(ServiceInflightTest, BytesPastTheBudgetAreRefusedBeforeTheStore) {
  FakeStore store;
  ServiceLimits limits;
  const uint64_t page = PageLayout{.page_size = 16, .n_kv_heads = 1, .head_dim = 8}.PageBytes();
  limits.max_inflight_bytes = 2 * page + 10;
  KvStoreService service(&store, limits);
  auto put_of = [&](uint64_t first, int n) {
    v1::BatchPutRequest req;
    for (int i = 0; i < n; ++i) {
      v1::PutPage* p = req.add_pages();
      v1::KeyToProto(PageKey{.hash = {.hi = first + i, .lo = 1}, .layer = 0}, p->mutable_key());
      v1::LayoutToProto(PageLayout{.page_size = 16, .n_kv_heads = 1, .head_dim = 8},
                        p->mutable_layout());
      p->set_inline_data(std::string(page, 'x'));
      p->set_checksum(PageChecksum(p->inline_data().data(), page));
    }
    return req;
  };
  // Three pages never fit.
  v1::BatchPutResponse put_resp;
  EXPECT_EQ(service.DoBatchPut(kAnon, put_of(1, 3), &put_resp).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store.calls, 0);
  // Two fit; held (as gRPC holds them until the call is done), they leave
  // room for a 10-byte get but not an 11-byte one, nor another put.
  InflightBytes::Grant put_held;
  ASSERT_TRUE(service.DoBatchPut(kAnon, put_of(1, 2), &put_resp, &put_held).ok());
  EXPECT_EQ(put_held.bytes(), 2 * page);
  EXPECT_EQ(service.inflight().held_bytes(), 2 * page);
  const int calls_after_put = store.calls;
  v1::BatchGetRequest get;
  v1::KeyToProto(PageKey{.hash = {.hi = 1, .lo = 1}, .layer = 0}, get.add_keys());
  v1::BatchGetResponse get_resp;
  {
    InflightBytes::Grant get_held;
    ASSERT_TRUE(service.DoBatchGet(kAnon, get, &get_resp, &get_held).ok());
    EXPECT_EQ(get_held.bytes(), 10u);
    EXPECT_EQ(service.inflight().held_bytes(), 2 * page + 10);
  }
  store.stored_bytes = {.ram = 6, .disk_only = 5};
  get_resp.Clear();
  EXPECT_EQ(service.DoBatchGet(kAnon, get, &get_resp).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(service.DoBatchPut(kAnon, put_of(5, 1), &put_resp).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store.calls, calls_after_put + 1);  // the one get that fitted
  EXPECT_EQ(service.inflight().refused(), 3u);
  // An arena get carries RAM pages by reference: only disk bytes count
  // (this service has no data plane, which it says once admitted).
  store.stored_bytes = {.ram = 1000, .disk_only = 10};
  get.set_arena_session_id(7);
  EXPECT_EQ(service.DoBatchGet(kAnon, get, &get_resp).code(), absl::StatusCode::kFailedPrecondition);
  store.stored_bytes = {.ram = 0, .disk_only = 11};
  EXPECT_EQ(service.DoBatchGet(kAnon, get, &get_resp).code(), absl::StatusCode::kResourceExhausted);
  put_held = InflightBytes::Grant();
  EXPECT_EQ(service.inflight().held_bytes(), 0u);
}

}  // namespace
}  // namespace kvtier::store
