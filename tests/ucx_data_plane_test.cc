// The UCX data plane against the real kvtier-server, over shared memory and
// over TCP (UCX_TLS, set for the server process and the client alike):
// byte-exact transfers of many odd-sized pages (RAM pages sent from their
// arena slots, disk pages from their copies), a restart mid-stream, a
// batch larger than the arena, an abandoned transfer, a tagged commit with a
// page missing, tagged-get region validation, and the gRPC fallback giving
// the same results; each with staged, tagged and automatic put modes.
#include <stdlib.h>

#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/data_plane.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/store.grpc.pb.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"
#include "testing/ucx_test_util.h"

namespace kvtier::testing {
namespace {

// (transport, put mode): every scenario runs over both transports with the
// staged put path, with tagged messages, and with the automatic choice.
using Param = std::tuple<std::string, client::UcxPutMode>;

class UcxDataPlaneTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    // Read by ucp_config_read in this process and inherited by the server.
    const std::string tls = std::get<0>(GetParam()) == "tcp" ? "tcp" : "posix,sysv,cma";
    ASSERT_EQ(setenv("UCX_TLS", tls.c_str(), 1), 0);
  }
  void TearDown() override { unsetenv("UCX_TLS"); }

  std::unique_ptr<ServerProcess> Start(std::vector<std::string> args = {}) {
    args.push_back("--data_dir=" + dir_.path() + "/data");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir_.path());
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? std::move(server).value() : nullptr;
  }

  static std::unique_ptr<client::StoreClient> Connect(const ServerProcess& server,
                                                      bool use_ucx = true) {
    return Connect(server, use_ucx, std::get<1>(GetParam()));
  }
  static std::unique_ptr<client::StoreClient> Connect(const ServerProcess& server, bool use_ucx,
                                                      client::UcxPutMode mode) {
    client::ClientOptions options;
    options.use_ucx = use_ucx;
    options.ucx_put_mode = mode;
    options.deadline_ms = 10'000;
    auto client = client::StoreClient::Connect(server.target(), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? std::move(client).value() : nullptr;
  }

  TempDir dir_;
};

TEST_P(UcxDataPlaneTest, ManyOddSizedPagesArriveByteExact) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);
  const OddPages pages = MakeOddPages(203, 1);

  absl::StatusOr<std::vector<client::PutOutcome>> put = client->BatchPut(pages.puts);
  ASSERT_TRUE(put.ok()) << put.status();
  ASSERT_EQ(put->size(), pages.puts.size());
  for (const client::PutOutcome& o : *put) EXPECT_FALSE(o.already_present);
  // A second put of the same pages writes nothing and says so.
  put = client->BatchPut(pages.puts);
  ASSERT_TRUE(put.ok()) << put.status();
  for (const client::PutOutcome& o : *put) EXPECT_TRUE(o.already_present);

  for (uint64_t hint : {uint64_t{0}, uint64_t{238392}}) {
    absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys, hint);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), pages.keys.size());
    for (size_t i = 0; i < got->size(); ++i) {
      const client::GotPage& g = (*got)[i];
      ASSERT_EQ(g.status, v1::PAGE_STATUS_OK) << i;
      EXPECT_EQ(g.key, pages.keys[i]);
      EXPECT_EQ(g.layout, pages.puts[i].layout);
      // RAM pages go from the arena slot straight to the client.
      EXPECT_EQ(g.tier, v1::TIER_RAM) << i;
      EXPECT_EQ(g.data, pages.bytes[i]) << "page " << i;
      EXPECT_EQ(g.checksum, PageChecksum(pages.bytes[i].data(), pages.bytes[i].size()));
    }
  }
  // Every byte took the data plane, over one session: a page the server
  // sent wrong would fail the client's checksum, and the client would have
  // reconnected and fallen back to inline bytes.
  const client::DataPlaneStats stats = client->data_plane_stats();
  EXPECT_EQ(stats.sessions_opened, 1u);
  EXPECT_EQ(stats.ucx_put_pages, 2 * pages.puts.size());
  EXPECT_EQ(stats.ucx_get_pages, 2 * pages.keys.size());
  EXPECT_EQ(stats.inline_put_pages, 0u);
  EXPECT_EQ(stats.inline_get_pages, 0u);
  absl::StatusOr<v1::StatsResponse> server_stats = client->Stats();
  ASSERT_TRUE(server_stats.ok());
  EXPECT_EQ(server_stats->put_pages(), pages.puts.size());
  EXPECT_EQ(server_stats->put_duplicate_pages(), pages.puts.size());
  EXPECT_EQ(server_stats->reserved_bytes(), 0u);
}

TEST_P(UcxDataPlaneTest, RamAndDiskPagesInOneGetArriveByteExact) {
  // 1 MiB of RAM: most of the pages are demoted, so each get mixes pages
  // sent from their arena slots with pages read back from disk.
  std::unique_ptr<ServerProcess> server = Start({"--ram_bytes=1048576"});
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);
  const OddPages pages = MakeOddPages(48, 4);
  for (size_t first = 0; first < pages.puts.size(); first += 8) {
    absl::Span<const client::PutPage> batch(pages.puts.data() + first, 8);
    ASSERT_TRUE(client->BatchPut(batch).ok()) << first;
  }
  int disk_pages = 0;
  for (uint64_t hint : {uint64_t{0}, uint64_t{238392}}) {
    absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys, hint);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), pages.keys.size());
    int ram = 0, disk = 0;
    for (size_t i = 0; i < got->size(); ++i) {
      const client::GotPage& g = (*got)[i];
      ASSERT_EQ(g.status, v1::PAGE_STATUS_OK) << i;
      EXPECT_EQ(g.data, pages.bytes[i]) << "page " << i;
      (g.tier == v1::TIER_RAM ? ram : disk)++;
    }
    EXPECT_GT(ram, 0);
    EXPECT_GT(disk, 0);
    disk_pages += disk;
  }
  const client::DataPlaneStats stats = client->data_plane_stats();
  EXPECT_EQ(stats.sessions_opened, 1u);
  const client::UcxPutMode mode = std::get<1>(GetParam());
  if (std::get<0>(GetParam()) == "shm" &&
      (mode == client::UcxPutMode::kAuto || mode == client::UcxPutMode::kClientWrites)) {
    // Mapped gets of 48 keys go as messages, whose replies leave the bytes
    // of disk pages to an inline RPC.
    EXPECT_EQ(stats.message_gets, 2u);
    EXPECT_EQ(stats.inline_get_pages, static_cast<uint64_t>(disk_pages));
    EXPECT_EQ(stats.ucx_get_pages, 2 * pages.keys.size() - disk_pages);
  } else {
    EXPECT_EQ(stats.message_gets, 0u);
    EXPECT_EQ(stats.ucx_get_pages, 2 * pages.keys.size());
    EXPECT_EQ(stats.inline_get_pages, 0u);
  }
  absl::StatusOr<v1::StatsResponse> server_stats = client->Stats();
  ASSERT_TRUE(server_stats.ok());
  EXPECT_GT(server_stats->demotions(), 0u);
  EXPECT_EQ(server_stats->lost_pages(), 0u);
}

TEST_P(UcxDataPlaneTest, ClientWritesIntoTheArenaByteExact) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> client =
      Connect(*server, /*use_ucx=*/true, client::UcxPutMode::kClientWrites);
  ASSERT_NE(client, nullptr);
  const OddPages pages = MakeOddPages(101, 3);
  absl::StatusOr<std::vector<client::PutOutcome>> put = client->BatchPut(pages.puts);
  ASSERT_TRUE(put.ok()) << put.status();
  for (const client::PutOutcome& o : *put) EXPECT_FALSE(o.already_present);
  absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), pages.keys.size());
  for (size_t i = 0; i < got->size(); ++i) {
    ASSERT_EQ((*got)[i].status, v1::PAGE_STATUS_OK) << i;
    EXPECT_EQ((*got)[i].data, pages.bytes[i]) << "page " << i;
  }
  EXPECT_EQ(client->data_plane_stats().ucx_put_pages, pages.puts.size());
  EXPECT_EQ(client->data_plane_stats().inline_put_pages, 0u);
  // On shared memory the arena (allocated by UCX) is mapped here: the pages
  // are copied into it and out of it; over TCP they are written with
  // ucp_put_nbx and read through a region.
  const bool shm = std::get<0>(GetParam()) == "shm";
  EXPECT_EQ(client->data_plane_stats().mapped_put_pages, shm ? pages.puts.size() : 0u);
  EXPECT_EQ(client->data_plane_stats().mapped_get_pages, shm ? pages.keys.size() : 0u);
  EXPECT_EQ(client->data_plane_stats().mapped_get_retries, 0u);
  absl::StatusOr<v1::StatsResponse> stats = client->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->put_pages(), pages.puts.size());
  EXPECT_EQ(stats->reserved_bytes(), 0u);
}

TEST_P(UcxDataPlaneTest, BatchLargerThanTheArenaIsRefusedAndCommitsNothing) {
  // 1 MiB of RAM and no room on disk either: 20 pages of 64 KiB cannot fit.
  std::unique_ptr<ServerProcess> server = Start({"--ram_bytes=1048576", "--disk_bytes=65536"});
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);
  const PageLayout layout{.page_size = 32, .n_kv_heads = 8, .head_dim = 64, .dtype = DType::kF16};
  ASSERT_EQ(layout.PageBytes(), 64u << 10);
  const PageSet pages = MakePages(layout, PromptChain(layout, 20, 5), 1);
  absl::StatusOr<std::vector<client::PutOutcome>> put = client->BatchPut(pages.ToPut(layout));
  EXPECT_EQ(put.status().code(), absl::StatusCode::kResourceExhausted) << put.status();
  absl::StatusOr<v1::StatsResponse> stats = client->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->put_pages(), 0u);
  EXPECT_EQ(stats->reserved_bytes(), 0u);
  EXPECT_EQ(stats->ram().pages(), 0u);
  absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (const client::GotPage& g : *got) EXPECT_EQ(g.status, v1::PAGE_STATUS_NOT_FOUND);
  // The refusal came from the data-plane path (no inline put was tried).
  EXPECT_EQ(client->data_plane_stats().inline_put_pages, 0u);
  EXPECT_EQ(client->data_plane_stats().sessions_opened, 1u);
}

// Polls Stats until reserved_bytes is 0 (bounded); returns the last value.
uint64_t AwaitNoReservedBytes(client::StoreClient& client) {
  uint64_t reserved = ~uint64_t{0};
  for (int i = 0; i < 200 && reserved != 0; ++i) {
    absl::StatusOr<v1::StatsResponse> stats = client.Stats();
    EXPECT_TRUE(stats.ok()) << stats.status();
    if (!stats.ok()) break;
    reserved = stats->reserved_bytes();
    if (reserved != 0) absl::SleepFor(absl::Milliseconds(50));
  }
  return reserved;
}

TEST_P(UcxDataPlaneTest, AClientThatVanishesMidTransferLeavesNoReservedSpace) {
  std::unique_ptr<ServerProcess> server = Start({"--ucx_transfer_timeout_ms=300"});
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> observer = Connect(*server, /*use_ucx=*/false);
  ASSERT_NE(observer, nullptr);
  const OddPages pages = MakeOddPages(12, 2);
  {
    // A client that opens a session, reserves, writes some pages and is gone.
    RawSession raw;
    ASSERT_NO_FATAL_FAILURE(OpenRawSession(server->target(), &raw));
    auto& [plane, stub, opened, connection] = raw;

    const bool tagged = std::get<1>(GetParam()) == client::UcxPutMode::kTagged;
    v1::ReservePutRequest reserve;
    reserve.set_session_id(opened.session_id());
    reserve.set_tagged(tagged);
    for (const client::PutPage& p : pages.puts) {
      v1::PutPage* wire = reserve.add_pages();
      wire->mutable_key()->set_hash(p.key.hash.CanonicalString());
      wire->mutable_key()->set_layer(p.key.layer);
      wire->mutable_layout()->set_page_size(p.layout.page_size);
      wire->mutable_layout()->set_n_kv_heads(p.layout.n_kv_heads);
      wire->mutable_layout()->set_head_dim(p.layout.head_dim);
      wire->mutable_layout()->set_dtype(static_cast<v1::DType>(p.layout.dtype));
      wire->mutable_layout()->set_arrangement(v1::ARRANGEMENT_K_THEN_V);
      wire->set_checksum(PageChecksum(p.data.data(), p.data.size()));
    }
    grpc::ClientContext reserve_context;
    v1::ReservePutResponse reserved;
    grpc::Status s = stub->ReservePut(&reserve_context, reserve, &reserved);
    ASSERT_TRUE(s.ok()) << s.error_message();
    ASSERT_EQ(reserved.slots_size(), 12);
    absl::StatusOr<v1::StatsResponse> stats = observer->Stats();
    ASSERT_TRUE(stats.ok());
    EXPECT_GT(stats->reserved_bytes(), 0u);
    // Half the pages are written (or sent into the posted receives); then
    // the client is gone (no commit, no abort).
    std::vector<ucx::WriteSegment> half;
    std::vector<ucx::SendSegment> half_sent;
    for (int i = 0; i < 6; ++i) {
      half.push_back({.local = pages.puts[i].data.data(), .bytes = pages.puts[i].data.size(),
                      .remote_address = opened.arena_address() + reserved.slots(i).arena_offset()});
      half_sent.push_back({.local = pages.puts[i].data.data(),
                           .bytes = pages.puts[i].data.size(),
                           .tag = reserved.transfer_id() + i});
    }
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    const absl::Status written =
        tagged ? connection->endpoint->Send(half_sent, 4, deadline)
               : connection->endpoint->Write(half, *connection->arena_rkey, 4, deadline);
    ASSERT_TRUE(written.ok()) << written;
  }
  EXPECT_EQ(AwaitNoReservedBytes(*observer), 0u);
  absl::StatusOr<v1::StatsResponse> stats = observer->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->put_pages(), 0u);
  EXPECT_EQ(stats->ram().pages(), 0u);
  // The space is usable again, and none of the abandoned pages is visible.
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (const client::GotPage& g : *got) EXPECT_EQ(g.status, v1::PAGE_STATUS_NOT_FOUND);
  ASSERT_TRUE(client->BatchPut(pages.puts).ok());
  EXPECT_EQ(client->data_plane_stats().ucx_put_pages, pages.puts.size());
}

TEST_P(UcxDataPlaneTest, TaggedCommitWithAPageMissingFailsAndCommitsNothing) {
  std::unique_ptr<ServerProcess> server = Start({"--ucx_transfer_timeout_ms=500"});
  ASSERT_NE(server, nullptr);
  std::unique_ptr<client::StoreClient> observer = Connect(*server, /*use_ucx=*/false);
  ASSERT_NE(observer, nullptr);
  RawSession raw;
  ASSERT_NO_FATAL_FAILURE(OpenRawSession(server->target(), &raw));
  auto& [plane, stub, opened, connection] = raw;
  // The automatic put mode decides by this: tagged over TCP only.
  if (std::get<0>(GetParam()) == "tcp") {
    EXPECT_EQ(connection->am_transport, "tcp");
  } else {
    EXPECT_TRUE(connection->am_transport == "sysv" ||
                connection->am_transport == "posix")
        << connection->am_transport;
  }

  const OddPages pages = MakeOddPages(4, 4);
  v1::ReservePutRequest reserve;
  reserve.set_session_id(opened.session_id());
  reserve.set_tagged(true);
  for (const client::PutPage& p : pages.puts) {
    v1::PutPage* wire = reserve.add_pages();
    v1::KeyToProto(p.key, wire->mutable_key());
    v1::LayoutToProto(p.layout, wire->mutable_layout());
    wire->set_checksum(PageChecksum(p.data.data(), p.data.size()));
  }
  grpc::ClientContext reserve_context;
  v1::ReservePutResponse reserved;
  ASSERT_TRUE(stub->ReservePut(&reserve_context, reserve, &reserved).ok());
  ASSERT_EQ(reserved.slots_size(), 4);
  // Pages 0..2 are sent; page 3 never is.
  std::vector<ucx::SendSegment> sent;
  for (int i = 0; i < 3; ++i) {
    sent.push_back({.local = pages.puts[i].data.data(), .bytes = pages.puts[i].data.size(),
                    .tag = reserved.transfer_id() + i});
  }
  ASSERT_TRUE(
      connection->endpoint->Send(sent, 2, absl::Now() + absl::Seconds(10)).ok());
  grpc::ClientContext commit_context;
  v1::CommitPutRequest commit;
  commit.set_session_id(opened.session_id());
  commit.set_transfer_id(reserved.transfer_id());
  v1::BatchPutResponse committed;
  const grpc::Status s = stub->CommitPut(&commit_context, commit, &committed);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  EXPECT_EQ(AwaitNoReservedBytes(*observer), 0u);
  absl::StatusOr<v1::StatsResponse> stats = observer->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->put_pages(), 0u);
  EXPECT_EQ(stats->ram().pages(), 0u);
  // The transfer is gone: a second commit finds nothing.
  grpc::ClientContext again_context;
  EXPECT_EQ(stub->CommitPut(&again_context, commit, &committed).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_P(UcxDataPlaneTest, TaggedGetRegionsAreValidated) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<client::ClientDataPlane>> plane =
      client::ClientDataPlane::Create(ucx::UcxOptions{});
  ASSERT_TRUE(plane.ok()) << plane.status();
  auto stub = v1::KvStore::NewStub(
      grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext open_context;
  v1::OpenDataPlaneRequest open;
  open.set_client_worker_address((*plane)->worker_address());
  v1::OpenDataPlaneResponse opened;
  ASSERT_TRUE(stub->OpenDataPlane(&open_context, open, &opened).ok());
  absl::StatusOr<client::ClientDataPlane::RegionLease> region = (*plane)->LeaseRegion(1 << 20);
  ASSERT_TRUE(region.ok()) << region.status();
  const OddPages pages = MakeOddPages(3, 5);
  auto get = [&](uint64_t slot_bytes, uint64_t tag = uint64_t{7} << 32) {
    v1::BatchGetRequest request;
    for (const PageKey& key : pages.keys) v1::KeyToProto(key, request.add_keys());
    v1::DataPlaneRegion* r = request.mutable_region();
    r->set_session_id(opened.session_id());
    r->set_address(reinterpret_cast<uint64_t>(region->memory().address()));
    r->set_bytes(region->memory().bytes());
    r->set_rkey(region->memory().packed_rkey());
    r->set_tag(tag);
    r->set_slot_bytes(slot_bytes);
    grpc::ClientContext context;
    v1::BatchGetResponse response;
    return stub->BatchGet(&context, request, &response).error_code();
  };
  EXPECT_EQ(get(0), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(get(region->memory().bytes() + 1), grpc::StatusCode::INVALID_ARGUMENT);
  // Three slots of half the region overrun it.
  EXPECT_EQ(get(region->memory().bytes() / 2), grpc::StatusCode::INVALID_ARGUMENT);
  // Fitting slots and no stored page: nothing is sent, the call succeeds.
  EXPECT_EQ(get(region->memory().bytes() / 4), grpc::StatusCode::OK);
  // A tag base has no page-index bits (wire::IsTagBase): page tags of two
  // gets could meet otherwise.
  EXPECT_EQ(get(region->memory().bytes() / 4, (uint64_t{7} << 32) | 5),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// Any bytes may arrive as a client's worker address; the server answers
// INVALID_ARGUMENT and keeps serving (UCX alone aborts on most of them).
TEST_P(UcxDataPlaneTest, MalformedWorkerAddressesAreRefusedAndTheServerKeepsServing) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  auto stub = v1::KvStore::NewStub(
      grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials()));
  std::mt19937_64 rng(11);
  std::vector<std::string> addresses = {std::string(1, '\x01'), std::string(16, '\xff')};
  for (size_t length : {2, 9, 150, 4000}) {
    std::string random(length, '\0');
    for (char& c : random) c = static_cast<char>(rng());
    addresses.push_back(random);
  }
  for (const std::string& address : addresses) {
    grpc::ClientContext context;
    v1::OpenDataPlaneRequest open;
    open.set_client_worker_address(address);
    v1::OpenDataPlaneResponse opened;
    EXPECT_EQ(stub->OpenDataPlane(&context, open, &opened).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << address.size() << " bytes";
  }
  // Still up, and a real client's session still opens and moves pages.
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);
  const OddPages pages = MakeOddPages(2, 3);
  ASSERT_TRUE(client->BatchPut(pages.puts).ok());
  absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < got->size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]);
  EXPECT_EQ(client->data_plane_stats().sessions_opened, 1u);
  EXPECT_EQ(client->data_plane_stats().inline_get_pages, 0u);
}

// A region's packed key comes from the client too; UCX crashes unpacking a
// malformed one, so the server refuses it and keeps serving.
TEST_P(UcxDataPlaneTest, MalformedRegionKeysAreRefusedAndTheServerKeepsServing) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  absl::StatusOr<std::unique_ptr<client::ClientDataPlane>> plane =
      client::ClientDataPlane::Create(ucx::UcxOptions{});
  ASSERT_TRUE(plane.ok()) << plane.status();
  auto stub = v1::KvStore::NewStub(
      grpc::CreateChannel(server->target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext open_context;
  v1::OpenDataPlaneRequest open;
  open.set_client_worker_address((*plane)->worker_address());
  v1::OpenDataPlaneResponse opened;
  ASSERT_TRUE(stub->OpenDataPlane(&open_context, open, &opened).ok());
  absl::StatusOr<client::ClientDataPlane::RegionLease> region = (*plane)->LeaseRegion(1 << 20);
  ASSERT_TRUE(region.ok()) << region.status();
  const OddPages pages = MakeOddPages(2, 9);
  const std::string good = region->memory().packed_rkey();
  for (const std::string& rkey : {std::string(16, '\xff'), good.substr(0, good.size() / 2)}) {
    v1::BatchGetRequest get;
    for (const PageKey& key : pages.keys) v1::KeyToProto(key, get.add_keys());
    v1::DataPlaneRegion* r = get.mutable_region();
    r->set_session_id(opened.session_id());
    r->set_address(reinterpret_cast<uint64_t>(region->memory().address()));
    r->set_bytes(region->memory().bytes());
    r->set_rkey(rkey);
    grpc::ClientContext get_context;
    v1::BatchGetResponse got;
    // Nothing stored: the key is checked only when a page is to be written.
    EXPECT_TRUE(stub->BatchGet(&get_context, get, &got).ok());

    v1::BatchPutRequest put;
    uint64_t offset = 0;
    for (const client::PutPage& page : pages.puts) {
      v1::PutPage* p = put.add_pages();
      v1::KeyToProto(page.key, p->mutable_key());
      v1::LayoutToProto(page.layout, p->mutable_layout());
      p->set_checksum(PageChecksum(page.data.data(), page.data.size()));
      p->set_region_offset(offset);
      offset += page.data.size();
    }
    *put.mutable_region() = *r;
    grpc::ClientContext put_context;
    v1::BatchPutResponse put_reply;
    // Shared memory: the key is refused. TCP emulates RMA and unpacks any
    // key, so the server reads whatever the address holds, and the
    // checksums refuse those bytes. Nothing is stored either way.
    const grpc::StatusCode code = stub->BatchPut(&put_context, put, &put_reply).error_code();
    EXPECT_EQ(code, std::get<0>(GetParam()) == "tcp" ? grpc::StatusCode::DATA_LOSS
                                                     : grpc::StatusCode::INVALID_ARGUMENT)
        << rkey.size() << " bytes";
  }
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Stats()->put_pages(), 0u);
  ASSERT_TRUE(client->BatchPut(pages.puts).ok());
  absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < got->size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]);
  EXPECT_EQ(client->Stats()->reserved_bytes(), 0u);
}

TEST_P(UcxDataPlaneTest, ServerRestartMidStreamReconnectsAndNeverReturnsACorruptPage) {
  std::unique_ptr<ServerProcess> server = Start();
  ASSERT_NE(server, nullptr);
  const int port = server->port();
  std::unique_ptr<client::StoreClient> client = Connect(*server);
  ASSERT_NE(client, nullptr);

  std::atomic<bool> stop{false};
  std::atomic<int> verified{0};
  std::atomic<int> corrupt{0};
  std::thread stream([&] {
    for (uint32_t round = 10; !stop.load(); ++round) {
      const OddPages pages = MakeOddPages(16, round);
      if (!client->BatchPut(pages.puts).ok()) continue;  // server down: try the next
      absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(pages.keys);
      if (!got.ok()) continue;
      for (size_t i = 0; i < got->size(); ++i) {
        const client::GotPage& g = (*got)[i];
        if (g.status != v1::PAGE_STATUS_OK) continue;  // lost with the restart
        if (g.data == pages.bytes[i]) {
          ++verified;
        } else {
          ++corrupt;
        }
      }
    }
  });
  while (verified.load() < 64) absl::SleepFor(absl::Milliseconds(5));
  ASSERT_TRUE(server->Stop().ok());
  server = Start({absl::StrCat("--listen=127.0.0.1:", port)});
  ASSERT_NE(server, nullptr);
  const int before = verified.load();
  const uint64_t sessions_before = client->data_plane_stats().sessions_opened;
  while (verified.load() < before + 64 ||
         client->data_plane_stats().sessions_opened == sessions_before) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  stop = true;
  stream.join();
  EXPECT_EQ(corrupt.load(), 0);
  // A new session carried the pages after the restart.
  const client::DataPlaneStats stats = client->data_plane_stats();
  EXPECT_GE(stats.sessions_opened, 2u);
  const OddPages after = MakeOddPages(8, 999999);
  const uint64_t ucx_before = client->data_plane_stats().ucx_put_pages;
  ASSERT_TRUE(client->BatchPut(after.puts).ok());
  EXPECT_EQ(client->data_plane_stats().ucx_put_pages, ucx_before + after.puts.size());
}

TEST_P(UcxDataPlaneTest, WithoutUcxTheSameOperationsGiveTheSameResults) {
  // The same sequence against a UCX server with a UCX client, the same
  // server with an inline client, and a server without a data plane.
  struct Run {
    std::vector<std::string> server_args;
    bool use_ucx;
  };
  const std::vector<Run> runs = {{{}, true}, {{}, false}, {{"--noucx"}, true}};
  std::vector<std::string> transcripts;
  for (const Run& run : runs) {
    TempDir dir;
    std::vector<std::string> args = run.server_args;
    args.push_back("--data_dir=" + dir.path() + "/data");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir.path());
    ASSERT_TRUE(server.ok()) << server.status();
    std::unique_ptr<client::StoreClient> client = Connect(**server, run.use_ucx);
    ASSERT_NE(client, nullptr);
    const OddPages a = MakeOddPages(40, 7);
    const OddPages b = MakeOddPages(60, 7);  // a's 40 pages and 20 more
    std::string t;
    for (const OddPages* p : {&a, &b}) {
      absl::StatusOr<std::vector<client::PutOutcome>> put = client->BatchPut(p->puts);
      ASSERT_TRUE(put.ok()) << put.status();
      for (const client::PutOutcome& o : *put) t += o.already_present ? 'P' : 'n';
    }
    // A page whose bytes do not match its layout: the same refusal.
    std::vector<client::PutPage> bad = {a.puts[0]};
    bad[0].data = bad[0].data.subspan(1);
    t += absl::StrCat("|", client->BatchPut(bad).status().code(), "|");
    std::vector<PageKey> keys = b.keys;
    keys.push_back(MakeOddPages(61, 8).keys.back());  // never stored
    absl::StatusOr<std::vector<client::GotPage>> got = client->BatchGet(keys);
    ASSERT_TRUE(got.ok()) << got.status();
    for (const client::GotPage& g : *got) {
      t += absl::StrCat(g.status, ":", g.tier, ":", g.checksum, ":", g.data.size(), ";");
      if (g.status == v1::PAGE_STATUS_OK) {
        const size_t i = &g - got->data();
        EXPECT_EQ(g.data, b.bytes[i]);
      }
    }
    absl::StatusOr<v1::StatsResponse> stats = client->Stats();
    ASSERT_TRUE(stats.ok());
    t += absl::StrCat("|", stats->put_pages(), ",", stats->put_duplicate_pages(), ",",
                      stats->reserved_bytes(), ",", stats->ram().pages());
    const client::DataPlaneStats dp = client->data_plane_stats();
    const bool ucx_expected = run.use_ucx && run.server_args.empty();
    EXPECT_EQ(dp.ucx_put_pages > 0, ucx_expected);
    EXPECT_EQ(dp.inline_get_pages == 0, ucx_expected);
    transcripts.push_back(t);
  }
  EXPECT_EQ(transcripts[0], transcripts[1]);
  EXPECT_EQ(transcripts[0], transcripts[2]);
}

// kAuto over TCP keeps bytes inline (AutoKeepsBytesInlineOverTcp), so the
// data-plane scenarios run it on shared memory only.
INSTANTIATE_TEST_SUITE_P(
    Transports, UcxDataPlaneTest,
    ::testing::Values(Param{"shm", client::UcxPutMode::kServerReads},
                      Param{"shm", client::UcxPutMode::kClientWrites},
                      Param{"shm", client::UcxPutMode::kTagged},
                      Param{"shm", client::UcxPutMode::kAuto},
                      Param{"tcp", client::UcxPutMode::kServerReads},
                      Param{"tcp", client::UcxPutMode::kTagged}),
    [](const ::testing::TestParamInfo<Param>& info) {
      switch (std::get<1>(info.param)) {
        case client::UcxPutMode::kTagged:
          return std::get<0>(info.param) + "_tagged";
        case client::UcxPutMode::kAuto:
          return std::get<0>(info.param) + "_auto";
        case client::UcxPutMode::kClientWrites:
          return std::get<0>(info.param) + "_client_writes";
        default:
          return std::get<0>(info.param) + "_staged";
      }
    });

}  // namespace
}  // namespace kvtier::testing
