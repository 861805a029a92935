// KvStoreService's limits and threads without gRPC: tenants' quotas from the
// access file, the in-flight byte budget, the waiting pool, and the
// Store's default in-place get.
#include "kvstore/service/service.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/checksum.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvstore/access/access_table.h"
#include "kvstore/service/service_test_store.h"
#include "kvstore/service/tenants.h"
#include "kvtier/v1/convert.h"

namespace kvtier::store {
namespace {

using testing::FakeStore;

const Caller kAnon = Caller::Anonymous();

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
  // A tagged transfer's page index must fit its tag's index bits.
  l.max_batch_pages = wire::kMaxTagPages + 1;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l.max_batch_pages = wire::kMaxTagPages;
  EXPECT_TRUE(l.Validate().ok());
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
  get.set_arena_session_id(wire::SessionId{.hi = 1, .lo = 7}.Bytes());
  EXPECT_EQ(service.DoBatchGet(kAnon, get, &get_resp).code(), absl::StatusCode::kFailedPrecondition);
  store.stored_bytes = {.ram = 0, .disk_only = 11};
  EXPECT_EQ(service.DoBatchGet(kAnon, get, &get_resp).code(), absl::StatusCode::kResourceExhausted);
  put_held = InflightBytes::Grant();
  EXPECT_EQ(service.inflight().held_bytes(), 0u);
}

}  // namespace
}  // namespace kvtier::store
