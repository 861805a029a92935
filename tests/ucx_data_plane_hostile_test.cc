// The UCX data plane against what a careless or hostile client does: a batch
// larger than the arena, a client that vanishes mid-transfer, a tagged
// commit with a page missing, bad tagged-get regions, malformed worker
// addresses and region keys. The server refuses each, commits nothing and
// keeps serving. Fixture and parameters: ucx_data_plane_fixture.h (the
// instantiation is in ucx_data_plane_test.cc).
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
#include "tests/ucx_data_plane_fixture.h"

namespace kvtier::testing {
namespace {

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
  RawSession raw;
  ASSERT_NO_FATAL_FAILURE(OpenRawSession(server->target(), &raw));
  // Plain references, not structured bindings, so that lambdas capture them.
  v1::KvStore::Stub* stub = raw.stub.get();
  const v1::OpenDataPlaneResponse& opened = raw.opened;
  absl::StatusOr<client::ClientDataPlane::RegionLease> region = raw.plane->LeaseRegion(1 << 20);
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
  RawSession raw;
  ASSERT_NO_FATAL_FAILURE(OpenRawSession(server->target(), &raw));
  // Plain references, not structured bindings, so that lambdas capture them.
  v1::KvStore::Stub* stub = raw.stub.get();
  const v1::OpenDataPlaneResponse& opened = raw.opened;
  absl::StatusOr<client::ClientDataPlane::RegionLease> region = raw.plane->LeaseRegion(1 << 20);
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

}  // namespace
}  // namespace kvtier::testing
