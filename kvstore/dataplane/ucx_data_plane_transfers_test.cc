// UcxDataPlane's put transfers in-process over a real TieredStore: that
// reservations end with their transfer (commit, abort, close, expiry) so no
// reserved byte is left, for written and for tagged transfers; tags no
// transfer wants; checksums given at commit; request messages served while
// receives are posted; and the arena allocated through UCX.
#include <atomic>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "kvstore/dataplane/ucx_data_plane.h"
#include "kvstore/dataplane/ucx_data_plane_test_fixture.h"
#include "kvtier/v1/data_plane.h"
#include "testing/store_test_util.h"
#include "ucx/endpoint.h"
#include "ucx/message.h"
#include "ucx/worker.h"

namespace kvtier::store {
namespace {

using testing::Key;
using testing::PageBytes;
using testing::Spec;
using testing::TempDir;
using SessionId = UcxDataPlane::SessionId;

DataPlaneOptions ProbingOptions() {
  DataPlaneOptions options;
  options.address_probe = KVTIER_UCX_PROBE_PATH;
  options.expose_arena = true;
  return options;
}

// Replies the data plane sends to this test's client worker.
class IgnoreReplies : public ucx::MessageReceiver {
 public:
  void OnMessage(const ucx::ReceivedMessage&) override {}
};

TEST_F(UcxDataPlaneTest, ReservedSlotsCommitWithTheirBytes) {
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  const SessionId session = Open(*plane);
  const PutSpec specs[] = {Spec(Key(1)), Spec(Key(2))};
  absl::StatusOr<UcxDataPlane::ReserveReply> reserved = plane->ReservePut(session, specs);
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  ASSERT_EQ(reserved->slots.size(), 2u);
  EXPECT_GT(store_->Stats().reserved_bytes, 0u);
  // Write the bytes where the offsets say (as the client's put would).
  for (int i = 0; i < 2; ++i) {
    const std::vector<uint8_t> bytes = PageBytes(specs[i].key, specs[i].layout);
    std::memcpy(store_->RamRegion().data() + reserved->slots[i].arena_offset, bytes.data(),
                bytes.size());
  }
  // A transfer belongs to its session.
  EXPECT_EQ(plane->CommitPut({.hi = session.hi, .lo = session.lo + 1}, reserved->transfer_id)
                .status()
                .code(),
            absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<PutResult>> committed =
      plane->CommitPut(session, reserved->transfer_id);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(store_->Stats().put_pages, 2u);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(plane->pending_transfers(), 0u);
  // Already stored: the slot says so and nothing is reserved for it.
  reserved = plane->ReservePut(session, specs);
  ASSERT_TRUE(reserved.ok());
  EXPECT_TRUE(reserved->slots[0].already_present);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  plane->AbortPut(session, reserved->transfer_id);
  EXPECT_EQ(plane->pending_transfers(), 0u);
}

// The thread that delivers a request message holds UCX's worker lock while
// the handler runs. A tagged ReservePut posting its receives meanwhile must
// not hold the data plane's lock, or the handler's next call into the plane
// (CheckSession here, FindSession for the next message) waits forever.
TEST_F(UcxDataPlaneTest, TaggedReserveWhileAMessageIsServedDoesNotDeadlock) {
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  const UcxDataPlane::OpenReply opened = OpenSession(*plane);
  const SessionId session = opened.session_id;
  absl::Notification entered, release;
  std::atomic<bool> checked{false};
  plane->SetRequestHandler([&](const SessionId& id, uint32_t, absl::string_view) {
    entered.Notify();
    release.WaitForNotificationWithTimeout(absl::Seconds(10));
    checked = plane->CheckSession(id, 0).ok();
    return absl::StatusOr<std::string>(std::string());
  });
  // The reply may reach the client worker's progress thread after this
  // body returns, so the receiver outlives the fixture.
  static IgnoreReplies ignore;
  ASSERT_TRUE(ucx::SetMessageHandler(client_worker_.get(), wire::kReplyMessageId, &ignore).ok());
  absl::StatusOr<std::unique_ptr<ucx::UcxEndpoint>> endpoint =
      ucx::UcxEndpoint::Connect(client_worker_.get(), opened.worker_address);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  ASSERT_TRUE((*endpoint)->Flush(absl::Now() + absl::Seconds(10)).ok());
  const wire::RequestHeader header{.request_id = 1, .session_id = session, .op = 99};
  ASSERT_TRUE((*endpoint)
                  ->Use([&](ucp_ep_h ep) {
                    return ucx::SendMessage(
                        ep, wire::kRequestMessageId,
                        absl::string_view(reinterpret_cast<const char*>(&header), sizeof(header)),
                        "", /*want_reply=*/true);
                  })
                  .ok());
  ASSERT_TRUE(entered.WaitForNotificationWithTimeout(absl::Seconds(10)));

  const PutSpec specs[] = {Spec(Key(3))};
  absl::StatusOr<UcxDataPlane::ReserveReply> reserved;
  absl::Notification done;
  std::thread reserve([&] {
    reserved = plane->ReservePut(session, specs, /*tagged=*/true);
    done.Notify();
  });
  absl::SleepFor(absl::Milliseconds(300));  // the reserve now waits for the worker lock
  release.Notify();
  if (!done.WaitForNotificationWithTimeout(absl::Seconds(20))) {
    ADD_FAILURE() << "ReservePut and the message handler deadlocked";
    std::abort();  // the threads cannot be joined
  }
  reserve.join();
  EXPECT_TRUE(checked);
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  plane->AbortPut(session, reserved->transfer_id);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  plane->SetRequestHandler(nullptr);
  endpoint->reset();
}

TEST_F(UcxDataPlaneTest, CloseAndExpiryReleaseReservations) {
  const PutSpec specs[] = {Spec(Key(7))};
  {
    std::unique_ptr<UcxDataPlane> plane = Create();
    ASSERT_NE(plane, nullptr);
    const SessionId a = Open(*plane);
    ASSERT_TRUE(plane->ReservePut(a, specs).ok());
    EXPECT_GT(store_->Stats().reserved_bytes, 0u);
    plane->Close(a);
    EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
    EXPECT_EQ(plane->open_sessions(), 0u);
    // Destroying the plane aborts what is still pending.
    ASSERT_TRUE(plane->ReservePut(Open(*plane), specs).ok());
    EXPECT_GT(store_->Stats().reserved_bytes, 0u);
  }
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);

  DataPlaneOptions options;
  options.transfer_timeout_ms = 1;
  std::unique_ptr<UcxDataPlane> plane = Create(options);
  ASSERT_NE(plane, nullptr);
  const SessionId b = Open(*plane);
  absl::StatusOr<UcxDataPlane::ReserveReply> reserved = plane->ReservePut(b, specs);
  ASSERT_TRUE(reserved.ok());
  absl::SleepFor(absl::Milliseconds(2));  // past the 1 ms timeout
  plane->SweepExpired();
  EXPECT_EQ(plane->pending_transfers(), 0u);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(plane->CommitPut(b, reserved->transfer_id).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stats().put_pages, 0u);
}

// A client may still be copying into the slots of a transfer that ended
// under it: they stay out of use for released_slot_quarantine, and the
// next put gets other slots.
TEST_F(UcxDataPlaneTest, SlotsOfEndedTransfersAreQuarantined) {
  const PutSpec specs[] = {Spec(Key(7))};
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  const SessionId session = Open(*plane);
  absl::StatusOr<UcxDataPlane::ReserveReply> first = plane->ReservePut(session, specs);
  ASSERT_TRUE(first.ok());
  plane->AbortPut(session, first->transfer_id);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(store_->Stats().quarantined_bytes, 4096u);
  absl::StatusOr<UcxDataPlane::ReserveReply> second = plane->ReservePut(session, specs);
  ASSERT_TRUE(second.ok());
  EXPECT_NE(second->slots[0].arena_offset, first->slots[0].arena_offset);
  plane->Close(session);
  EXPECT_EQ(store_->Stats().quarantined_bytes, 2u * 4096);

  DataPlaneOptions at_once;
  at_once.released_slot_quarantine = absl::ZeroDuration();
  std::unique_ptr<UcxDataPlane> trusting = Create(at_once);
  ASSERT_NE(trusting, nullptr);
  const SessionId other = Open(*trusting);
  absl::StatusOr<UcxDataPlane::ReserveReply> third =
      trusting->ReservePut(other, {Spec(Key(8))});
  ASSERT_TRUE(third.ok());
  trusting->AbortPut(other, third->transfer_id);
  EXPECT_EQ(store_->Stats().quarantined_bytes, 2u * 4096);
}

TEST_F(UcxDataPlaneTest, TaggedPagesLandInTheirSlotsAndCommit) {
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  const UcxDataPlane::OpenReply opened = OpenSession(*plane);
  const PutSpec specs[] = {Spec(Key(1)), Spec(Key(2))};
  absl::StatusOr<UcxDataPlane::ReserveReply> reserved =
      plane->ReservePut(opened.session_id, specs, /*tagged=*/true);
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  // Tags are transfer_id + page index: the low bits are the index's.
  EXPECT_TRUE(wire::IsTagBase(reserved->transfer_id));
  absl::StatusOr<std::unique_ptr<ucx::UcxEndpoint>> endpoint =
      ucx::UcxEndpoint::Connect(client_worker_.get(), opened.worker_address);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<ucx::SendSegment> sends;
  for (int i = 0; i < 2; ++i) {
    bytes.push_back(PageBytes(specs[i].key, specs[i].layout));
    sends.push_back({.local = bytes[i].data(), .bytes = bytes[i].size(),
                     .tag = reserved->transfer_id + i});
  }
  ASSERT_TRUE((*endpoint)->Send(sends, 2, absl::Now() + absl::Seconds(10)).ok());
  absl::StatusOr<std::vector<PutResult>> committed =
      plane->CommitPut(opened.session_id, reserved->transfer_id);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(store_->Stats().put_pages, 2u);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(std::memcmp(store_->RamRegion().data() + reserved->slots[i].arena_offset,
                          bytes[i].data(), bytes[i].size()),
              0);
  }
  EXPECT_EQ(plane->pending_transfers(), 0u);
}

// UCX matches a tag whichever endpoint sent it, so a transfer's tags are
// its only guard: transfer ids are unpredictable, and tagged messages that
// no transfer wants (eager, in fragments, or by rendezvous) are dropped
// rather than kept by UCX for good, while a transfer's own pages still land.
TEST_F(UcxDataPlaneTest, TaggedMessagesNoTransferWantsAreDroppedAndTransfersStillLand) {
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  const UcxDataPlane::OpenReply opened = OpenSession(*plane);
  absl::StatusOr<std::unique_ptr<ucx::UcxEndpoint>> endpoint =
      ucx::UcxEndpoint::Connect(client_worker_.get(), opened.worker_address);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  // 48 random bits: 64 ids of a counter would set a handful of them.
  uint64_t any_bit = 0;
  for (int i = 0; i < 64; ++i) {
    absl::StatusOr<UcxDataPlane::ReserveReply> reserved =
        plane->ReservePut(opened.session_id, {Spec(Key(100 + i))}, /*tagged=*/true);
    ASSERT_TRUE(reserved.ok()) << reserved.status();
    EXPECT_TRUE(wire::IsTagBase(reserved->transfer_id));
    any_bit |= reserved->transfer_id;
    plane->AbortPut(opened.session_id, reserved->transfer_id);
  }
  EXPECT_GE(__builtin_popcountll(any_bit), 44);
  EXPECT_EQ(plane->dropped_tagged_messages(), 0u);

  // Tags no receive was posted for: 100 bytes (eager), 20 KiB (eager in
  // fragments over TCP) and 1 MiB (rendezvous).
  std::vector<std::vector<uint8_t>> junk;
  std::vector<ucx::SendSegment> sends;
  for (size_t bytes : {size_t{100}, size_t{20} << 10, size_t{1} << 20}) {
    junk.emplace_back(bytes, 0x41);
    sends.push_back({.local = junk.back().data(), .bytes = bytes,
                     .tag = wire::PageTag(0x5eed << wire::kTagIndexBits, junk.size() - 1)});
  }
  ASSERT_TRUE((*endpoint)->Send(sends, 3, absl::Now() + absl::Seconds(10)).ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (plane->dropped_tagged_messages() < 3 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(plane->dropped_tagged_messages(), 3u);

  const PutSpec specs[] = {Spec(Key(1)), Spec(Key(2))};
  absl::StatusOr<UcxDataPlane::ReserveReply> reserved =
      plane->ReservePut(opened.session_id, specs, /*tagged=*/true);
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  std::vector<std::vector<uint8_t>> bytes;
  sends.clear();
  for (int i = 0; i < 2; ++i) {
    bytes.push_back(PageBytes(specs[i].key, specs[i].layout));
    sends.push_back({.local = bytes[i].data(), .bytes = bytes[i].size(),
                     .tag = wire::PageTag(reserved->transfer_id, i)});
  }
  ASSERT_TRUE((*endpoint)->Send(sends, 2, absl::Now() + absl::Seconds(10)).ok());
  absl::StatusOr<std::vector<PutResult>> committed =
      plane->CommitPut(opened.session_id, reserved->transfer_id);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(store_->Stats().put_pages, 2u);
  EXPECT_EQ(plane->dropped_tagged_messages(), 3u);
}

// A writer that hashes while it copies declares the checksums at commit:
// a wrong count changes nothing, a wrong checksum commits nothing, the
// right ones commit although the reservation declared none.
TEST_F(UcxDataPlaneTest, ChecksumsGivenAtCommitAreVerified) {
  std::unique_ptr<UcxDataPlane> plane = Create();
  ASSERT_NE(plane, nullptr);
  const SessionId session = Open(*plane);
  PutSpec specs[] = {Spec(Key(1)), Spec(Key(2))};
  std::vector<uint64_t> checksums;
  for (PutSpec& spec : specs) {
    checksums.push_back(spec.checksum);
    spec.checksum = 0;
  }
  for (bool right : {false, true}) {
    absl::StatusOr<UcxDataPlane::ReserveReply> reserved = plane->ReservePut(session, specs);
    ASSERT_TRUE(reserved.ok()) << reserved.status();
    for (int i = 0; i < 2; ++i) {
      const std::vector<uint8_t> bytes = PageBytes(specs[i].key, specs[i].layout);
      std::memcpy(store_->RamRegion().data() + reserved->slots[i].arena_offset, bytes.data(),
                  bytes.size());
    }
    const uint64_t one[] = {checksums[0]};
    EXPECT_EQ(plane->CommitPut(session, reserved->transfer_id, one).status().code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(plane->pending_transfers(), 1u);
    std::vector<uint64_t> declared = checksums;
    if (!right) declared[1] ^= 1;
    absl::StatusOr<std::vector<PutResult>> committed =
        plane->CommitPut(session, reserved->transfer_id, declared);
    EXPECT_EQ(plane->pending_transfers(), 0u);
    EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
    if (!right) {
      EXPECT_EQ(committed.status().code(), absl::StatusCode::kDataLoss);
      EXPECT_EQ(store_->Stats().put_pages, 0u);
    } else {
      ASSERT_TRUE(committed.ok()) << committed.status();
      EXPECT_EQ(store_->Stats().put_pages, 2u);
    }
  }
}

// The arena allocated through UCX: the data plane hands out that
// allocation's address and key, and a client's one-sided writes into the
// reserved slots commit byte for byte.
TEST(UcxArenaMemoryTest, ClientWritesIntoTheUcxAllocatedArena) {
  TempDir dir;
  absl::StatusOr<std::shared_ptr<UcxArenaMemory>> ucx_arena =
      UcxArenaMemory::Create(ucx::UcxOptions{});
  ASSERT_TRUE(ucx_arena.ok()) << ucx_arena.status();
  StoreOptions options;
  options.data_dir = dir.path();
  options.ram.capacity_bytes = 1 << 20;
  options.ram_memory = (*ucx_arena)->Provider();
  options.prefault_ram = true;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(options);
  ASSERT_TRUE(store.ok()) << store.status();
  std::shared_ptr<const ucx::UcxMemory> memory = (*ucx_arena)->memory();
  ASSERT_NE(memory, nullptr);
  EXPECT_EQ(memory->address(), (*store)->RamRegion().data());
  // The provider allocates once.
  EXPECT_EQ((*ucx_arena)->Provider()(4096).status().code(), absl::StatusCode::kFailedPrecondition);

  absl::StatusOr<std::unique_ptr<UcxDataPlane>> plane =
      UcxDataPlane::Create(store->get(), ProbingOptions(), *ucx_arena);
  ASSERT_TRUE(plane.ok()) << plane.status();
  std::unique_ptr<ucx::UcxContext> client_context = *ucx::UcxContext::Create(ucx::UcxOptions{});
  std::unique_ptr<ucx::UcxWorker> client_worker = *ucx::UcxWorker::Create(*client_context);
  ucx::UcxProgressThread client_progress(client_worker.get());
  absl::StatusOr<UcxDataPlane::OpenReply> opened = (*plane)->Open(client_worker->address());
  ASSERT_TRUE(opened.ok()) << opened.status();
  EXPECT_EQ(opened->arena_address, reinterpret_cast<uint64_t>(memory->address()));
  EXPECT_EQ(opened->arena_rkey, memory->packed_rkey());

  const PutSpec specs[] = {Spec(Key(1)), Spec(Key(2)), Spec(Key(3))};
  absl::StatusOr<UcxDataPlane::ReserveReply> reserved =
      (*plane)->ReservePut(opened->session_id, specs);
  ASSERT_TRUE(reserved.ok()) << reserved.status();
  absl::StatusOr<std::unique_ptr<ucx::UcxEndpoint>> endpoint =
      ucx::UcxEndpoint::Connect(client_worker.get(), opened->worker_address);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  absl::StatusOr<std::unique_ptr<ucx::UcxRemoteKey>> rkey =
      (*endpoint)->UnpackKey(opened->arena_rkey);
  ASSERT_TRUE(rkey.ok()) << rkey.status();
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<ucx::WriteSegment> writes;
  for (size_t i = 0; i < std::size(specs); ++i) {
    bytes.push_back(PageBytes(specs[i].key, specs[i].layout));
  }
  for (size_t i = 0; i < std::size(specs); ++i) {
    writes.push_back({.local = bytes[i].data(), .bytes = bytes[i].size(),
                      .remote_address = opened->arena_address + reserved->slots[i].arena_offset});
  }
  ASSERT_TRUE((*endpoint)->Write(writes, **rkey, 2, absl::Now() + absl::Seconds(10)).ok());
  absl::StatusOr<std::vector<PutResult>> committed =
      (*plane)->CommitPut(opened->session_id, reserved->transfer_id);
  ASSERT_TRUE(committed.ok()) << committed.status();
  absl::StatusOr<std::vector<GetResult>> got = (*store)->BatchGet({Key(1), Key(2), Key(3)});
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < std::size(specs); ++i) {
    ASSERT_TRUE((*got)[i].status.ok()) << (*got)[i].status;
    EXPECT_EQ((*got)[i].data, std::string(bytes[i].begin(), bytes[i].end()));
  }
  EXPECT_EQ((*store)->Stats().reserved_bytes, 0u);
  rkey->reset();
  endpoint->reset();
  plane->reset();
  // The store (and its arena) may outlive the plane and the arena object.
  ucx_arena->reset();
  EXPECT_EQ((*store)->BatchGet({Key(2)}).value()[0].data,
            std::string(bytes[1].begin(), bytes[1].end()));
}

TEST_F(UcxDataPlaneTest, TaggedReservationsEndWithAbortCloseExpiryAndDestruction) {
  const PutSpec specs[] = {Spec(Key(3)), Spec(Key(4))};
  {
    std::unique_ptr<UcxDataPlane> plane = Create();
    ASSERT_NE(plane, nullptr);
    const SessionId a = Open(*plane);
    absl::StatusOr<UcxDataPlane::ReserveReply> reserved = plane->ReservePut(a, specs, true);
    ASSERT_TRUE(reserved.ok()) << reserved.status();
    EXPECT_GT(store_->Stats().reserved_bytes, 0u);
    plane->AbortPut(a, reserved->transfer_id);
    EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
    ASSERT_TRUE(plane->ReservePut(a, specs, true).ok());
    plane->Close(a);
    EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
    EXPECT_EQ(plane->pending_transfers(), 0u);
    ASSERT_TRUE(plane->ReservePut(Open(*plane), specs, true).ok());
    EXPECT_GT(store_->Stats().reserved_bytes, 0u);
  }
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);

  DataPlaneOptions options;
  options.transfer_timeout_ms = 1;
  std::unique_ptr<UcxDataPlane> plane = Create(options);
  ASSERT_NE(plane, nullptr);
  const SessionId b = Open(*plane);
  absl::StatusOr<UcxDataPlane::ReserveReply> reserved = plane->ReservePut(b, specs, true);
  ASSERT_TRUE(reserved.ok());
  absl::SleepFor(absl::Milliseconds(2));  // past the 1 ms timeout
  plane->SweepExpired();
  EXPECT_EQ(plane->pending_transfers(), 0u);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  // A commit whose pages never came: past its expiry, nothing committed.
  options.transfer_timeout_ms = 200;
  plane = Create(options);
  ASSERT_NE(plane, nullptr);
  const SessionId c = Open(*plane);
  reserved = plane->ReservePut(c, specs, true);
  ASSERT_TRUE(reserved.ok());
  EXPECT_EQ(plane->CommitPut(c, reserved->transfer_id).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(plane->pending_transfers(), 0u);
  EXPECT_EQ(store_->Stats().reserved_bytes, 0u);
  EXPECT_EQ(store_->Stats().put_pages, 0u);
}

}  // namespace
}  // namespace kvtier::store
