// The automatic mode of the client against the real kvtier-server: a copy
// out of the mapped arena that fails its checksum, the request-message
// protocol (gets and puts as UCX active messages, their validation and
// fallbacks), clients of one process sharing a data plane, and the default
// transports (shared memory on one host; bytes inline where UCX has only
// TCP).
#include <stdlib.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "client/data_plane.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/data_plane.h"
#include "kvtier/v1/store.grpc.pb.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"
#include "testing/ucx_test_util.h"
#include "ucx/message.h"

namespace kvtier::testing {
namespace {

// A server and a client in the automatic mode over one UCX_TLS.
class UcxAutoClientTest : public ::testing::Test {
 protected:
  // `tls` null: UCX_TLS unset, UCX's (and kvtier's) default transports.
  void Start(const char* tls, std::vector<std::string> extra_flags = {}) {
    // Read by ucp_config_read in this process and inherited by the server.
    if (tls == nullptr) {
      ASSERT_EQ(unsetenv("UCX_TLS"), 0);
    } else {
      ASSERT_EQ(setenv("UCX_TLS", tls, 1), 0);
    }
    extra_flags.push_back("--data_dir=" + dir_.path() + "/data");
    // The automatic choice among every path, the arena's own included.
    extra_flags.push_back("--trusted_local_clients");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start(extra_flags, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
    client::ClientOptions options;
    options.deadline_ms = 10'000;
    absl::StatusOr<std::unique_ptr<client::StoreClient>> client =
        client::StoreClient::Connect(server_->target(), options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = *std::move(client);
  }
  void TearDown() override { unsetenv("UCX_TLS"); }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::StoreClient> client_;
};

// A page copied out of the mapped arena that does not match its checksum
// (here: overwritten in the arena behind the store's back, as a reused slot
// would read) is asked for again through a verifying read: the client never
// returns the bad bytes, and the store drops the page as lost.
TEST_F(UcxAutoClientTest, ACopyThatFailsItsChecksumIsReadAgainAndNeverReturned) {
  ASSERT_NO_FATAL_FAILURE(Start("posix,sysv,cma"));
  const OddPages pages = MakeOddPages(4, 11);
  ASSERT_TRUE(client_->BatchPut(pages.puts).ok());

  // A second session of this process, to find page 2's slot and spoil it.
  RawSession raw;
  ASSERT_NO_FATAL_FAILURE(OpenRawSession(server_->target(), &raw));
  auto& [plane, stub, opened, connection] = raw;
  ASSERT_NE(connection->arena_mapped, nullptr);
  grpc::ClientContext get_context;
  v1::BatchGetRequest locate;
  v1::KeyToProto(pages.keys[2], locate.add_keys());
  locate.set_arena_session_id(opened.session_id());
  v1::BatchGetResponse located;
  ASSERT_TRUE(stub->BatchGet(&get_context, locate, &located).ok());
  ASSERT_TRUE(located.pages(0).in_arena());
  connection->arena_mapped[located.pages(0).arena_offset() + 7] ^= 0x40;

  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (int i : {0, 1, 3}) {
    ASSERT_EQ((*got)[i].status, v1::PAGE_STATUS_OK) << i;
    EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
  }
  EXPECT_EQ((*got)[2].status, v1::PAGE_STATUS_LOST);
  EXPECT_TRUE((*got)[2].data.empty());
  const client::DataPlaneStats stats = client_->data_plane_stats();
  EXPECT_EQ(stats.mapped_get_pages, 3u);
  EXPECT_EQ(stats.mapped_get_retries, 1u);
  EXPECT_EQ(stats.message_gets, 1u);
  absl::StatusOr<v1::StatsResponse> server_stats = client_->Stats();
  ASSERT_TRUE(server_stats.ok());
  EXPECT_EQ(server_stats->lost_pages(), 1u);
}

// The request-message protocol's answers besides a served get: an unknown
// op is refused, a closed session is NOT_FOUND (the client then
// reconnects), and a server that is gone leaves the call to its deadline.
TEST_F(UcxAutoClientTest, RequestMessagesReportErrorsAndMissingReplies) {
  ASSERT_NO_FATAL_FAILURE(Start("posix,sysv,cma"));
  RawSession raw;
  ASSERT_NO_FATAL_FAILURE(OpenRawSession(server_->target(), &raw));
  auto call = [&](uint32_t op, absl::Duration timeout) {
    return raw.plane->Call(*raw.connection, op, "request", absl::Now() + timeout).status();
  };
  const absl::Status unknown = call(99, absl::Seconds(10));
  EXPECT_EQ(unknown.code(), absl::StatusCode::kUnimplemented) << unknown;
  EXPECT_EQ(call(wire::kMappedGetOp, absl::Seconds(10)).code(),
            absl::StatusCode::kInvalidArgument);  // "request" is no BatchGetRequest

  grpc::ClientContext context;
  v1::CloseDataPlaneRequest close;
  close.set_session_id(raw.opened.session_id());
  v1::CloseDataPlaneResponse closed;
  ASSERT_TRUE(raw.stub->CloseDataPlane(&context, close, &closed).ok());
  EXPECT_EQ(call(99, absl::Seconds(10)).code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE(server_->Stop().ok());
  const absl::Status gone = call(99, absl::Milliseconds(300));
  EXPECT_TRUE(gone.code() == absl::StatusCode::kDeadlineExceeded ||
              gone.code() == absl::StatusCode::kUnavailable)
      << gone;
}

// Puts by message must reserve in their own session and not be tagged; a
// tagged transfer's commit by message is refused without losing it, since
// the commit waits for the transfer: it then commits by RPC.
TEST_F(UcxAutoClientTest, PutMessagesAreValidatedAndTaggedCommitsGoByRpc) {
  ASSERT_NO_FATAL_FAILURE(Start("posix,sysv,cma"));
  RawSession raw;
  ASSERT_NO_FATAL_FAILURE(OpenRawSession(server_->target(), &raw));
  const std::string session = raw.opened.session_id();
  std::string other = session;
  other[15] = static_cast<char>(other[15] ^ 1);
  auto call = [&](uint32_t op, const google::protobuf::MessageLite& request) {
    return raw.plane->Call(*raw.connection, op, request.SerializeAsString(),
                           absl::Now() + absl::Seconds(10));
  };
  const OddPages pages = MakeOddPages(1, 31);
  v1::ReservePutRequest reserve;
  v1::PutPage* page = reserve.add_pages();
  v1::KeyToProto(pages.keys[0], page->mutable_key());
  v1::LayoutToProto(pages.puts[0].layout, page->mutable_layout());
  page->set_checksum(PageChecksum(pages.bytes[0].data(), pages.bytes[0].size()));

  reserve.set_session_id(other);
  EXPECT_EQ(call(wire::kReservePutOp, reserve).status().code(), absl::StatusCode::kInvalidArgument);
  reserve.set_session_id(session);
  reserve.set_tagged(true);
  EXPECT_EQ(call(wire::kReservePutOp, reserve).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(raw.plane->Call(*raw.connection, wire::kCommitPutOp, "\xff\xff",
                            absl::Now() + absl::Seconds(10))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);  // not a CommitPutRequest

  // Tagged, by RPC: the commit by message is refused and the transfer stays.
  grpc::ClientContext reserve_context;
  v1::ReservePutResponse reserved;
  ASSERT_TRUE(raw.stub->ReservePut(&reserve_context, reserve, &reserved).ok());
  v1::CommitPutRequest commit;
  commit.set_session_id(session);
  commit.set_transfer_id(reserved.transfer_id());
  EXPECT_EQ(call(wire::kCommitPutOp, commit).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_GE(stats->reserved_bytes(), pages.bytes[0].size());  // arena blocks round up
  grpc::ClientContext abort_context;
  v1::AbortPutRequest abort;
  abort.set_session_id(session);
  abort.set_transfer_id(reserved.transfer_id());
  v1::AbortPutResponse aborted;
  ASSERT_TRUE(raw.stub->AbortPut(&abort_context, abort, &aborted).ok());

  // Not tagged, by message: reserve, copy into the mapped slot, commit.
  reserve.set_tagged(false);
  absl::StatusOr<std::string> reply = call(wire::kReservePutOp, reserve);
  ASSERT_TRUE(reply.ok()) << reply.status();
  ASSERT_TRUE(reserved.ParseFromString(*reply));
  ASSERT_EQ(reserved.slots_size(), 1);
  std::memcpy(raw.connection->arena_mapped + reserved.slots(0).arena_offset(),
              pages.bytes[0].data(), pages.bytes[0].size());
  commit.set_transfer_id(reserved.transfer_id());
  reply = call(wire::kCommitPutOp, commit);
  ASSERT_TRUE(reply.ok()) << reply.status();
  v1::BatchPutResponse committed;
  ASSERT_TRUE(committed.ParseFromString(*reply));
  ASSERT_EQ(committed.results_size(), 1);
  EXPECT_FALSE(committed.results(0).already_present());
  stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->reserved_bytes(), 0u);
  EXPECT_EQ(stats->put_pages(), 1u);
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].data, pages.bytes[0]);
}

// The progress thread that answers request messages never writes to disk:
// a put by message that would take RAM past its high watermark is refused
// (FAILED_PRECONDITION), and the client puts it by RPC instead, whose
// handler makes room. Every put still lands.
TEST_F(UcxAutoClientTest, PutsByMessageNeverMakeRoomOnDisk) {
  // 1 MiB of RAM, high watermark 0.9 (14.4 pages of 64 KiB), low 0.5.
  ASSERT_NO_FATAL_FAILURE(Start("posix,sysv,cma", {"--ram_bytes=1048576",
                                                   "--ram_low_watermark=0.5"}));
  const PageLayout layout{.page_size = 16, .n_kv_heads = 8, .head_dim = 128};  // 64 KiB
  ASSERT_EQ(layout.PageBytes(), 65536u);
  const PageSet pages = MakePages(layout, PromptChain(layout, 40, 5), 1);
  const std::vector<client::PutPage> puts = pages.ToPut(layout);

  // Raw: 15 pages in one reservation pass the watermark: refused by message.
  RawSession raw;
  ASSERT_NO_FATAL_FAILURE(OpenRawSession(server_->target(), &raw));
  v1::ReservePutRequest reserve;
  reserve.set_session_id(raw.opened.session_id());
  for (int i = 0; i < 15; ++i) {
    v1::PutPage* page = reserve.add_pages();
    v1::KeyToProto(pages.keys[i], page->mutable_key());
    v1::LayoutToProto(layout, page->mutable_layout());
    page->set_checksum(PageChecksum(pages.bytes[i].data(), pages.bytes[i].size()));
  }
  absl::StatusOr<std::string> refused =
      raw.plane->Call(*raw.connection, wire::kReservePutOp, reserve.SerializeAsString(),
                      absl::Now() + absl::Seconds(10));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->reserved_bytes(), 0u);

  // Through the client, one page per put: all 40 land, the ones past the
  // watermark by RPC, which demotes.
  for (const client::PutPage& page : puts) {
    absl::StatusOr<std::vector<client::PutOutcome>> put = client_->BatchPut({&page, 1});
    ASSERT_TRUE(put.ok()) << put.status();
  }
  stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->put_pages(), 40u);
  EXPECT_GT(stats->demotions(), 0u);
  EXPECT_EQ(stats->reserved_bytes(), 0u);
  EXPECT_EQ(stats->ram().pages() + stats->disk().pages(), 40u);
  const client::DataPlaneStats plane = client_->data_plane_stats();
  EXPECT_GT(plane.message_puts, 0u);
  EXPECT_EQ(plane.inline_put_pages, 0u);
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < got->size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
}

// Puts copied into the mapped arena go as messages up to
// StoreClient::kMessagePutMaxBytes (128 KiB) and by RPC beyond; both arrive
// byte-exact.
TEST_F(UcxAutoClientTest, SmallPutsGoAsMessagesAndLargeOnesByRpc) {
  ASSERT_NO_FATAL_FAILURE(Start("posix,sysv,cma"));
  // 120, 924, 25220 and 238392 bytes, twice.
  const OddPages pages = MakeOddPages(8, 41);
  for (const client::PutPage& page : pages.puts) {
    absl::StatusOr<std::vector<client::PutOutcome>> put = client_->BatchPut({&page, 1});
    ASSERT_TRUE(put.ok()) << put.status();
    EXPECT_FALSE((*put)[0].already_present);
  }
  // All eight again, 0.5 MiB in one put: by RPC, every page already there.
  absl::StatusOr<std::vector<client::PutOutcome>> again = client_->BatchPut(pages.puts);
  ASSERT_TRUE(again.ok()) << again.status();
  for (const client::PutOutcome& o : *again) EXPECT_TRUE(o.already_present);
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < got->size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
  const client::DataPlaneStats stats = client_->data_plane_stats();
  EXPECT_EQ(stats.message_puts, 6u);
  EXPECT_EQ(stats.mapped_put_pages, 6u);  // the 238392-byte pages were staged
  EXPECT_EQ(stats.ucx_put_pages, 16u);
  EXPECT_EQ(stats.inline_put_pages, 0u);
  absl::StatusOr<v1::StatsResponse> server_stats = client_->Stats();
  ASSERT_TRUE(server_stats.ok());
  EXPECT_EQ(server_stats->put_pages(), 8u);
  EXPECT_EQ(server_stats->put_duplicate_pages(), 8u);
  EXPECT_EQ(server_stats->reserved_bytes(), 0u);
}

// Clients of one process share a data plane per target: the first opens
// the session, the others use it, and it outlives the client that opened
// it. With ucx_share_data_plane off each client opens its own.
TEST_F(UcxAutoClientTest, ClientsOfAProcessShareOneSession) {
  ASSERT_NO_FATAL_FAILURE(Start("posix,sysv,cma"));
  auto connect = [&](bool share) {
    client::ClientOptions options;
    options.deadline_ms = 10'000;
    options.ucx_share_data_plane = share;
    absl::StatusOr<std::unique_ptr<client::StoreClient>> c =
        client::StoreClient::Connect(server_->target(), options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  };
  std::unique_ptr<client::StoreClient> second = connect(/*share=*/true);
  std::unique_ptr<client::StoreClient> own = connect(/*share=*/false);
  ASSERT_NE(second, nullptr);
  ASSERT_NE(own, nullptr);
  const OddPages pages = MakeOddPages(6, 51);
  ASSERT_TRUE(client_->BatchPut(absl::MakeConstSpan(pages.puts).subspan(0, 3)).ok());
  ASSERT_TRUE(second->BatchPut(absl::MakeConstSpan(pages.puts).subspan(3, 3)).ok());
  for (client::StoreClient* c : {client_.get(), second.get(), own.get()}) {
    absl::StatusOr<std::vector<client::GotPage>> got = c->BatchGet(pages.keys);
    ASSERT_TRUE(got.ok()) << got.status();
    for (size_t i = 0; i < got->size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
  }
  EXPECT_EQ(client_->data_plane_stats().sessions_opened, 1u);
  EXPECT_EQ(second->data_plane_stats().sessions_opened, 0u);  // used client_'s
  EXPECT_EQ(own->data_plane_stats().sessions_opened, 1u);
  for (client::StoreClient* c : {client_.get(), second.get(), own.get()}) {
    EXPECT_EQ(c->data_plane_stats().inline_get_pages, 0u);
    EXPECT_EQ(c->data_plane_stats().mapped_get_pages, pages.keys.size());
  }

  // The session stays open for `second` when the client that opened it goes.
  client_.reset();
  absl::StatusOr<std::vector<client::GotPage>> got = second->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < got->size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
  const client::DataPlaneStats stats = second->data_plane_stats();
  EXPECT_EQ(stats.sessions_opened, 0u);
  EXPECT_EQ(stats.mapped_get_pages, 2 * pages.keys.size());
  EXPECT_EQ(stats.inline_get_pages, 0u);
}

// With UCX_TLS unset a client on the server's host maps the arena (UCX's
// tcp transport is left out unless named, so shared memory is chosen).
TEST_F(UcxAutoClientTest, DefaultTransportsReachTheArenaOverSharedMemory) {
  ASSERT_NO_FATAL_FAILURE(Start(nullptr));
  const OddPages pages = MakeOddPages(6, 21);
  ASSERT_TRUE(client_->BatchPut(pages.puts).ok());
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < got->size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
  const client::DataPlaneStats stats = client_->data_plane_stats();
  EXPECT_EQ(stats.ucx_put_pages, pages.puts.size());
  EXPECT_EQ(stats.mapped_get_pages, pages.keys.size());
  EXPECT_EQ(stats.message_gets, 1u);
}

// Over TCP the automatic mode sends page bytes inline (measured faster than
// UCX's tcp transport, kvstore/dataplane/DATA_PLANE.md) with the same results, while
// a session is still opened (an explicit mode would use it).
TEST_F(UcxAutoClientTest, AutoKeepsBytesInlineOverTcp) {
  ASSERT_NO_FATAL_FAILURE(Start("tcp"));
  const OddPages pages = MakeOddPages(17, 5);
  ASSERT_TRUE(client_->BatchPut(pages.puts).ok());
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages.keys);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < got->size(); ++i) EXPECT_EQ((*got)[i].data, pages.bytes[i]) << i;
  const client::DataPlaneStats stats = client_->data_plane_stats();
  EXPECT_EQ(stats.sessions_opened, 1u);
  EXPECT_EQ(stats.ucx_put_pages, 0u);
  EXPECT_EQ(stats.ucx_get_pages, 0u);
  EXPECT_EQ(stats.inline_put_pages, pages.puts.size());
  EXPECT_EQ(stats.inline_get_pages, pages.keys.size());
}

}  // namespace
}  // namespace kvtier::testing
