// The data-plane RPCs' trust boundary, through the service's handlers onto
// a real store and UCX data plane: a session is its opener's tenant's and
// answers any other caller as an unknown one, and a data plane that does
// not trust its clients gives them no address or key of server memory and
// refuses every path where a client would reach the arena itself.
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "kvstore/access/access_control.h"
#include "kvstore/access/access_table.h"
#include "kvstore/core/store.h"
#include "kvstore/dataplane/ucx_data_plane.h"
#include "kvstore/service/service.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/data_plane.h"
#include "testing/store_test_util.h"
#include "ucx/context.h"
#include "ucx/worker.h"

namespace kvtier::store {
namespace {

using testing::Key;
using testing::PageBytes;
using testing::PutPages;
using testing::SmallLayout;
using testing::TempDir;

const Caller kAcme{.tenant = 0xac, .admin = false, .name = "acme"};
const Caller kGlobex{.tenant = 0x91, .admin = false, .name = "globex"};

class ServiceDataPlaneTest : public ::testing::TestWithParam<bool> {
 protected:
  bool trusted() const { return GetParam(); }

  void SetUp() override {
    StoreOptions options;
    options.data_dir = dir_.path();
    options.ram.capacity_bytes = 4 << 20;
    store_ = *Store::Open(options);
    DataPlaneOptions plane_options;
    plane_options.address_probe = KVTIER_UCX_PROBE_PATH;
    plane_options.expose_arena = trusted();
    absl::StatusOr<std::unique_ptr<UcxDataPlane>> plane =
        UcxDataPlane::Create(store_.get(), plane_options);
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = *std::move(plane);
    service_ = std::make_unique<KvStoreService>(
        store_.get(), ServiceLimits::FromStoreOptions(options), plane_.get());
  }

  wire::SessionId Open(const Caller& caller, v1::OpenDataPlaneResponse* reply) {
    v1::OpenDataPlaneRequest request;
    request.set_client_worker_address(client_worker_->address());
    absl::Status opened = service_->DoOpenDataPlane(caller, request, reply);
    EXPECT_TRUE(opened.ok()) << opened;
    absl::StatusOr<wire::SessionId> session = wire::SessionId::FromBytes(reply->session_id());
    EXPECT_TRUE(session.ok()) << session.status();
    return session.value_or(wire::SessionId());
  }

  v1::ReservePutRequest Reserve(const wire::SessionId& session, bool tagged, PageKey key) {
    v1::ReservePutRequest request;
    request.set_session_id(session.Bytes());
    request.set_tagged(tagged);
    v1::PutPage* page = request.add_pages();
    v1::KeyToProto(key, page->mutable_key());
    v1::LayoutToProto(SmallLayout(), page->mutable_layout());
    key.tenant = kAcme.tenant;
    const std::vector<uint8_t> bytes = PageBytes(key, SmallLayout());
    page->set_checksum(PageChecksum(bytes.data(), bytes.size()));
    return request;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<UcxDataPlane> plane_;
  std::unique_ptr<KvStoreService> service_;
  std::unique_ptr<ucx::UcxContext> client_context_ = *ucx::UcxContext::Create(ucx::UcxOptions{});
  std::unique_ptr<ucx::UcxWorker> client_worker_ = *ucx::UcxWorker::Create(*client_context_);
  ucx::UcxProgressThread client_progress_{client_worker_.get()};
};

TEST_P(ServiceDataPlaneTest, ASessionIsItsOpenersAndAbsentForEveryoneElse) {
  v1::OpenDataPlaneResponse reply;
  const wire::SessionId session = Open(kAcme, &reply);
  ASSERT_FALSE(session.IsZero());
  // A tagged reservation works in both modes; globex can neither reserve
  // in acme's session nor commit or abort acme's transfer.
  v1::ReservePutResponse reserved;
  EXPECT_EQ(service_->DoReservePut(kGlobex, Reserve(session, true, Key(1)), true, &reserved)
                .code(),
            absl::StatusCode::kNotFound);
  ASSERT_TRUE(service_->DoReservePut(kAcme, Reserve(session, true, Key(1)), true, &reserved).ok());
  v1::CommitPutRequest commit;
  commit.set_session_id(session.Bytes());
  commit.set_transfer_id(reserved.transfer_id());
  v1::BatchPutResponse committed;
  EXPECT_EQ(service_->DoCommitPut(kGlobex, commit, /*may_wait=*/false, &committed).code(),
            absl::StatusCode::kNotFound);
  v1::AbortPutRequest abort;
  abort.set_session_id(session.Bytes());
  abort.set_transfer_id(reserved.transfer_id());
  ASSERT_TRUE(service_->DoAbortPut(kGlobex, abort).ok());  // ignored, as for an unknown one
  EXPECT_GT(store_->Stats().reserved_bytes, 0u);
  ASSERT_TRUE(service_->DoAbortPut(kAcme, abort).ok());
  // Gets through acme's session, by region or arena: unknown to globex.
  ASSERT_TRUE(PutPages(*store_, {[] { PageKey k = Key(2); k.tenant = 0xac; return k; }()}).ok());
  v1::BatchGetRequest get;
  v1::KeyToProto(Key(2), get.add_keys());
  get.mutable_region()->set_session_id(session.Bytes());
  get.mutable_region()->set_address(4096);
  get.mutable_region()->set_bytes(1 << 20);
  get.mutable_region()->set_rkey("k");
  v1::BatchGetResponse got;
  EXPECT_EQ(service_->DoBatchGet(kGlobex, get, &got).code(), absl::StatusCode::kNotFound);
  get.clear_region();
  get.set_arena_session_id(session.Bytes());
  got.Clear();
  EXPECT_EQ(service_->DoBatchGet(kGlobex, get, &got).code(), absl::StatusCode::kNotFound);
  got.Clear();
  const absl::Status own = service_->DoBatchGet(kAcme, get, &got);
  if (trusted()) {
    ASSERT_TRUE(own.ok()) << own;
    EXPECT_TRUE(got.pages(0).in_arena());
  } else {
    EXPECT_EQ(own.code(), absl::StatusCode::kFailedPrecondition);
  }
  // Closing it is acme's alone.
  v1::CloseDataPlaneRequest close;
  close.set_session_id(session.Bytes());
  ASSERT_TRUE(service_->DoCloseDataPlane(kGlobex, close).ok());
  EXPECT_EQ(*plane_->SessionOwner(session), kAcme.tenant);
  ASSERT_TRUE(service_->DoCloseDataPlane(kAcme, close).ok());
  EXPECT_EQ(plane_->SessionOwner(session).status().code(), absl::StatusCode::kNotFound);
}

// A session id is 16 bytes: any other length is refused in every field
// that carries one, and a well-formed id differing from an open session's
// in any one bit names no session.
TEST_P(ServiceDataPlaneTest, SessionIdsAre16BytesAndEveryBitCounts) {
  v1::OpenDataPlaneResponse reply;
  const wire::SessionId session = Open(kAcme, &reply);
  ASSERT_EQ(reply.session_id().size(), 16u);
  auto codes = [&](const std::string& id) {
    std::vector<absl::StatusCode> out;
    v1::ReservePutRequest reserve = Reserve(session, true, Key(1));
    reserve.set_session_id(id);
    v1::ReservePutResponse reserved;
    out.push_back(service_->DoReservePut(kAcme, reserve, true, &reserved).code());
    v1::CommitPutRequest commit;
    commit.set_session_id(id);
    commit.set_transfer_id(1 << 16);
    v1::BatchPutResponse committed;
    out.push_back(service_->DoCommitPut(kAcme, commit, /*may_wait=*/false, &committed).code());
    v1::BatchGetRequest get;
    v1::KeyToProto(Key(2), get.add_keys());
    get.mutable_region()->set_session_id(id);
    get.mutable_region()->set_address(4096);
    get.mutable_region()->set_bytes(1 << 20);
    get.mutable_region()->set_rkey("k");
    v1::BatchGetResponse got;
    out.push_back(service_->DoBatchGet(kAcme, get, &got).code());
    if (!id.empty()) {  // empty: no arena session asked for
      get.clear_region();
      get.set_arena_session_id(id);
      got.Clear();
      out.push_back(service_->DoBatchGet(kAcme, get, &got).code());
    }
    v1::AbortPutRequest abort;
    abort.set_session_id(id);
    out.push_back(service_->DoAbortPut(kAcme, abort).code());
    v1::CloseDataPlaneRequest close;
    close.set_session_id(id);
    out.push_back(service_->DoCloseDataPlane(kAcme, close).code());
    return out;
  };
  const std::string good = session.Bytes();
  for (const std::string& bad : {std::string(), good.substr(8), good.substr(0, 15), good + "x"}) {
    for (absl::StatusCode code : codes(bad)) {
      EXPECT_EQ(code, absl::StatusCode::kInvalidArgument) << bad.size() << " bytes";
    }
  }
  const absl::StatusCode kNotFound = absl::StatusCode::kNotFound;
  const absl::StatusCode kOk = absl::StatusCode::kOk;  // Abort and Close ignore unknown ids
  for (int bit : {0, 7, 63, 64, 127}) {
    std::string other = good;
    other[bit / 8] = static_cast<char>(other[bit / 8] ^ (1 << (bit % 8)));
    EXPECT_EQ(codes(other),
              (std::vector<absl::StatusCode>{kNotFound, kNotFound, kNotFound, kNotFound, kOk, kOk}))
        << "bit " << bit;
  }
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(*plane_->SessionOwner(session), kAcme.tenant);  // still open
}

TEST_P(ServiceDataPlaneTest, OnlyTrustedClientsReachTheArena) {
  v1::OpenDataPlaneResponse reply;
  const wire::SessionId session = Open(kAcme, &reply);
  ASSERT_FALSE(session.IsZero());
  EXPECT_FALSE(reply.server_worker_address().empty());
  EXPECT_EQ(reply.arena_address() != 0, trusted());
  EXPECT_EQ(reply.arena_bytes() != 0, trusted());
  EXPECT_EQ(!reply.arena_rkey().empty(), trusted());
  // An untagged reservation is written by the client into the arena.
  v1::ReservePutResponse reserved;
  const absl::Status untagged =
      service_->DoReservePut(kAcme, Reserve(session, false, Key(3)), true, &reserved);
  if (trusted()) {
    EXPECT_TRUE(untagged.ok()) << untagged;
  } else {
    EXPECT_EQ(untagged.code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  }
  // Request messages all work on the arena; the session's owner is the caller.
  ASSERT_TRUE(PutPages(*store_, {[] { PageKey k = Key(4); k.tenant = 0xac; return k; }()}).ok());
  v1::BatchGetRequest get;
  v1::KeyToProto(Key(4), get.add_keys());
  get.set_arena_session_id(session.Bytes());
  absl::StatusOr<std::string> answer =
      service_->ServeMessage(session, wire::kMappedGetOp, get.SerializeAsString());
  if (trusted()) {
    ASSERT_TRUE(answer.ok()) << answer.status();
    v1::BatchGetResponse got;
    ASSERT_TRUE(got.ParseFromString(*answer));
    EXPECT_EQ(got.pages(0).status(), v1::PAGE_STATUS_OK);  // acme's page, found as acme
  } else {
    EXPECT_EQ(answer.status().code(), absl::StatusCode::kFailedPrecondition);
  }
}

// A grant (a data-plane session, a lane ticket) is registered only while
// the access table that authenticated its caller is current: a reload
// between a call's authentication and its registration, which the
// reload's closing of the old table's grants (CloseGrantedChannels) would
// miss, refuses it instead. The caller here was authenticated before the
// reload (generation 0) and reaches the registration after it.
TEST(ServiceGrantTest, GrantsAuthenticatedBeforeAReloadAreNotRegisteredAfterIt) {
  TempDir dir;
  const std::string access_path = dir.path() + "/access.txt";
  std::ofstream(access_path) << "tenant=acme role=tenant token_sha256="
                             << access::HashToken("acme-token-0123456789") << "\n";
  absl::StatusOr<std::unique_ptr<access::AccessControl>> access =
      access::AccessControl::Open(access_path);
  ASSERT_TRUE(access.ok()) << access.status();
  StoreOptions options;
  options.data_dir = dir.path() + "/store";
  options.ram.capacity_bytes = 4 << 20;
  std::unique_ptr<Store> store = *Store::Open(options);
  DataPlaneOptions plane_options;
  plane_options.address_probe = KVTIER_UCX_PROBE_PATH;
  std::unique_ptr<UcxDataPlane> plane = *UcxDataPlane::Create(store.get(), plane_options);
  KvStoreService service(store.get(), ServiceLimits::FromStoreOptions(options), plane.get(),
                         access->get());
  ASSERT_TRUE(service.StartLocalLanes(LocalLaneOptions{}).ok());
  std::unique_ptr<ucx::UcxContext> client_context = *ucx::UcxContext::Create(ucx::UcxOptions{});
  std::unique_ptr<ucx::UcxWorker> client_worker = *ucx::UcxWorker::Create(*client_context);
  ucx::UcxProgressThread client_progress{client_worker.get()};
  v1::OpenDataPlaneRequest open;
  open.set_client_worker_address(client_worker->address());

  const Caller before{.tenant = access::TenantTag("acme"), .admin = false, .name = "acme",
                      .access_generation = 0};
  v1::OpenDataPlaneResponse opened;
  ASSERT_TRUE(service.DoOpenDataPlane(before, open, &opened).ok());
  v1::OpenLocalLaneResponse ticket;
  ASSERT_TRUE(service.DoOpenLocalLane(before, /*may_write=*/true, &ticket).ok());
  EXPECT_EQ(plane->open_sessions(), 1u);

  ASSERT_TRUE((*access)->Reload().ok());  // the same file: still a new table
  service.CloseGrantedChannels();
  EXPECT_EQ(plane->open_sessions(), 0u);
  opened.Clear();
  const absl::Status session = service.DoOpenDataPlane(before, open, &opened);
  EXPECT_EQ(session.code(), absl::StatusCode::kUnavailable) << session;
  EXPECT_EQ(plane->open_sessions(), 0u);
  EXPECT_TRUE(opened.session_id().empty());
  ticket.Clear();
  const absl::Status lane = service.DoOpenLocalLane(before, /*may_write=*/true, &ticket);
  EXPECT_EQ(lane.code(), absl::StatusCode::kUnavailable) << lane;
  EXPECT_TRUE(ticket.ticket().empty());

  // Authenticated against the new table, the same tenant gets both.
  Caller after = before;
  after.access_generation = 1;
  ASSERT_TRUE(service.DoOpenDataPlane(after, open, &opened).ok());
  EXPECT_EQ(plane->open_sessions(), 1u);
  ASSERT_TRUE(service.DoOpenLocalLane(after, /*may_write=*/true, &ticket).ok());
  EXPECT_EQ(ticket.ticket().size(), 16u);
}

INSTANTIATE_TEST_SUITE_P(Modes, ServiceDataPlaneTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "trusted" : "untrusted";
                         });

}  // namespace
}  // namespace kvtier::store
