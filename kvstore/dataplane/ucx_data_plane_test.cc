// UcxDataPlane in-process over a real TieredStore, its sessions: option
// validation, the errors of unknown sessions and transfers, owners,
// addresses refused before UCX sees them, and the bound on open sessions.
// Put transfers: ucx_data_plane_transfers_test.cc.
#include "kvstore/dataplane/ucx_data_plane.h"

#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kvstore/dataplane/ucx_data_plane_test_fixture.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::Key;
using testing::Spec;
using SessionId = UcxDataPlane::SessionId;

TEST(DataPlaneOptionsTest, ValidateNamesTheBadOption) {
  EXPECT_TRUE(DataPlaneOptions().Validate().ok());
  auto code = [](auto mutate) {
    DataPlaneOptions o;
    mutate(o);
    return o.Validate().code();
  };
  EXPECT_EQ(code([](auto& o) { o.transfer_timeout_ms = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.transfer_timeout_ms = 3'600'001; }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.max_sessions = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.max_sessions = 65537; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.max_pending_transfers = 0; }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.window = 0; }), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.address_probe_timeout = absl::ZeroDuration(); }),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(code([](auto& o) { o.released_slot_quarantine = absl::Seconds(-1); }),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(UcxDataPlaneTest, UnknownSessionsAndTransfersAreNotFound) {
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  EXPECT_EQ(plane->Open("").status().code(), absl::StatusCode::kInvalidArgument);
  const PutSpec specs[] = {Spec(Key(1))};
  EXPECT_EQ(plane->ReservePut(SessionId{.hi = 1, .lo = 12345}, specs).status().code(),
            absl::StatusCode::kNotFound);
  const SessionId session = Open(*plane);
  EXPECT_EQ(plane->CommitPut(session, 999).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(plane->CheckRegion(session, 0, "").code(), absl::StatusCode::kInvalidArgument);
  // Both halves of the id count.
  EXPECT_EQ(plane->CheckRegion({.hi = session.hi, .lo = session.lo ^ 1}, 0, "k").code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(plane->CheckRegion({.hi = session.hi ^ 1, .lo = session.lo}, 0, "k").code(),
            absl::StatusCode::kNotFound);
  EXPECT_TRUE(plane->CheckRegion(session, 0, "k").ok());
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
}

TEST_F(UcxDataPlaneTest, UntrustedClientsGetNoArenaAndSessionsKeepTheirOwner) {
  DataPlaneOptions options;
  options.address_probe = KVTIER_UCX_PROBE_PATH;
  ASSERT_FALSE(options.expose_arena);  // the default
  absl::StatusOr<std::unique_ptr<UcxDataPlane>> plane =
      UcxDataPlane::Create(store_.get(), options);
  ASSERT_TRUE(plane.ok()) << plane.status();
  absl::StatusOr<UcxDataPlane::OpenReply> a = (*plane)->Open(client_worker_->address(), 7);
  absl::StatusOr<UcxDataPlane::OpenReply> b = (*plane)->Open(client_worker_->address(), 8);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->arena_address, 0u);
  EXPECT_EQ(a->arena_bytes, 0u);
  EXPECT_TRUE(a->arena_rkey.empty());
  EXPECT_FALSE(a->worker_address.empty());
  EXPECT_NE(a->session_id, b->session_id);
  EXPECT_EQ(*(*plane)->SessionOwner(a->session_id), 7u);
  EXPECT_EQ(*(*plane)->SessionOwner(b->session_id), 8u);
  // Another owner's session answers as one that is not open, message and all.
  EXPECT_TRUE((*plane)->CheckSession(a->session_id, 7).ok());
  const absl::Status theirs = (*plane)->CheckSession(a->session_id, 8);
  EXPECT_EQ(theirs.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(theirs, (*plane)->CheckRegion(a->session_id, 8, "k"));
  (*plane)->Close(a->session_id);
  EXPECT_EQ((*plane)->SessionOwner(a->session_id).status().code(), absl::StatusCode::kNotFound);
}

// At the session bound the owner holding the most sessions gives one up:
// a tenant that keeps opening sessions closes its own, not another's.
TEST_F(UcxDataPlaneTest, AtTheBoundTheHeaviestOwnerLosesASession) {
  DataPlaneOptions options;
  options.max_sessions = 2;
  std::unique_ptr<UcxDataPlane> plane = Create(options);
  ASSERT_NE(plane, nullptr);
  auto open = [&](uint64_t owner) {
    absl::StatusOr<UcxDataPlane::OpenReply> reply = plane->Open(client_worker_->address(), owner);
    EXPECT_TRUE(reply.ok()) << reply.status();
    return reply.ok() ? reply->session_id : SessionId();
  };
  auto open_now = [&](const SessionId& id) { return plane->SessionOwner(id).ok(); };
  const SessionId a1 = open(7);
  const SessionId b1 = open(8);
  const SessionId a2 = open(7);  // 7 would hold two: its own oldest goes
  EXPECT_FALSE(open_now(a1));
  EXPECT_TRUE(open_now(b1));
  const SessionId a3 = open(7);
  EXPECT_FALSE(open_now(a2));
  EXPECT_TRUE(open_now(b1));
  EXPECT_TRUE(open_now(a3));
  const SessionId b2 = open(8);  // now 8 would hold two
  EXPECT_FALSE(open_now(b1));
  EXPECT_TRUE(open_now(a3));
  EXPECT_TRUE(open_now(b2));
  EXPECT_EQ(plane->open_sessions(), 2u);
}

// Addresses UCX aborts on (its parser trusts its input) are refused with
// INVALID_ARGUMENT, the server keeps running, and a real client still
// connects afterwards.
TEST_F(UcxDataPlaneTest, MalformedClientAddressesAreRefusedAndTheServerSurvives) {
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  std::vector<std::string> bad = {std::string(1, '\x01'), std::string(16, '\xff'),
                                  client_worker_->address().substr(0, 20)};
  std::mt19937_64 rng(7);
  for (size_t length : {3, 64, 145, 1000}) {
    std::string random(length, '\0');
    for (char& c : random) c = static_cast<char>(rng());
    bad.push_back(random);
  }
  for (const std::string& address : bad) {
    absl::StatusOr<UcxDataPlane::OpenReply> opened = plane->Open(address);
    EXPECT_EQ(opened.status().code(), absl::StatusCode::kInvalidArgument)
        << address.size() << " bytes: " << opened.status();
  }
  EXPECT_EQ(plane->open_sessions(), 0u);
  EXPECT_FALSE(Open(*plane).IsZero());
  EXPECT_EQ(plane->open_sessions(), 1u);
}

TEST_F(UcxDataPlaneTest, AMissingProbeRefusesSessionsInsteadOfTrustingAddresses) {
  DataPlaneOptions options;
  options.address_probe = dir_.path() + "/no-such-probe";
  absl::StatusOr<std::unique_ptr<UcxDataPlane>> plane = UcxDataPlane::Create(store_.get(), options);
  ASSERT_TRUE(plane.ok()) << plane.status();
  EXPECT_EQ((*plane)->Open(client_worker_->address()).status().code(),
            absl::StatusCode::kUnavailable);
  EXPECT_EQ((*plane)->open_sessions(), 0u);
}

// CloseAll ends every session and gives up their transfers' reservations.
TEST_F(UcxDataPlaneTest, CloseAllEndsEverySessionAndItsTransfers) {
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  const SessionId a = Open(*plane);
  const SessionId b = Open(*plane);
  ASSERT_TRUE(plane->ReservePut(a, {Spec(Key(1))}).ok());
  ASSERT_TRUE(plane->ReservePut(b, {Spec(Key(2))}, /*tagged=*/true).ok());
  EXPECT_GT(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(plane->CloseAll(), 2u);
  EXPECT_EQ(plane->open_sessions(), 0u);
  for (const SessionId& session : {a, b}) {
    EXPECT_EQ(plane->ReservePut(session, {Spec(Key(3))}).status().code(),
              absl::StatusCode::kNotFound);
  }
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (plane->pending_transfers() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(plane->pending_transfers(), 0u);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(plane->CloseAll(), 0u);
  EXPECT_FALSE(Open(*plane).IsZero());  // and it goes on serving
}

TEST_F(UcxDataPlaneTest, SessionsAreBoundedLeastRecentlyUsedFirst) {
  DataPlaneOptions options;
  options.max_sessions = 2;
  std::unique_ptr<UcxDataPlane> plane = Create(options);
  ASSERT_NE(plane, nullptr);
  const SessionId a = Open(*plane);
  const SessionId b = Open(*plane);
  ASSERT_TRUE(plane->CheckRegion(a, 0, "k").ok());  // a is now the most recent
  const SessionId c = Open(*plane);
  EXPECT_EQ(plane->open_sessions(), 2u);
  EXPECT_TRUE(plane->CheckRegion(a, 0, "k").ok());
  EXPECT_EQ(plane->CheckRegion(b, 0, "k").code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(plane->CheckRegion(c, 0, "k").ok());
}

}  // namespace
}  // namespace kvtier::store
