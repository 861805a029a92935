// UcxDataPlane: the store's side of the UCX data plane (see
// kvstore/dataplane/DATA_PLANE.md and the "Data plane" section of store.proto).
//
// At creation the RAM arena (Store::RamRegion) is registered with UCX once
// (or, allocated by UCX through UcxArenaMemory, that registration is used)
// and its remote key packed once. A session is opened per client connection
// by the OpenDataPlane RPC, i.e. only after the gRPC request was accepted:
// it gets an endpoint to the client's worker (for gets) and receives the
// server worker's address, the arena's address and its remote key (for
// puts). There is no separate UCX listener port: endpoints are created from
// worker addresses exchanged over gRPC, so the gRPC port is the only one a
// client needs.
//
// Puts: ReservePut reserves arena slots (Store::Reserve) and hands out their
// offsets; the client writes them (ucp_put_nbx and a flush, or a copy into
// its mapping of the arena); CommitPut
// verifies checksums and publishes (Store::Commit). A pending transfer holds
// its Reservation here until it is committed, aborted, its session closed,
// or transfer_timeout_ms passes; the progress thread sweeps expired ones, so
// a client that vanishes mid-transfer leaves no reserved space behind.
//
// A tagged ReservePut also posts one tagged receive per new slot (tag
// transfer_id + page index) straight into the slot; the client sends the
// pages as tagged messages, and CommitPut waits (until the transfer's
// expiry) for every receive before it commits. UCX matches a tag whichever
// endpoint sent it, so transfer ids carry 48 bits from the kernel's CSPRNG
// (what no other peer can guess, as a session id), and the progress thread
// drops tagged messages no receive wanted (UcxWorker::DropUnexpectedTagged).
// A transfer given up while a receive is still matched to a message (abort,
// expiry, session close) drains: its receives are cancelled and its
// reservation is released only once UCX has let go of every slot, which the
// progress thread checks.
//
// Puts may also be pulled (PullPut): within one BatchPut RPC the server
// reserves, reads the bytes from the client's registered region straight
// into the slots (ucp_get_nbx), and commits; the client's measurements
// decide which (kvstore/dataplane/DATA_PLANE.md).
//
// Gets: WriteToRegion writes page bytes into a client's registered region
// through the session's endpoint and flushes before returning; the service
// passes RAM pages where they lie in the arena, under read leases that
// last until these calls (and SendToClient) return.
//
// Request messages (ucx_message.h) that clients send on their session's
// endpoint are answered by the thread that receives them, through the
// handler the service sets (SetRequestHandler).
//
// Slots of a transfer that ends uncommitted are quarantined for
// released_slot_quarantine before reuse (a client may still be copying into
// its mapping of them); bytes written even later land at worst in another
// page's slot, and checksums (verified on commit and on every read) keep
// them from ever being committed or returned.
//
// Thread-safety: thread-safe. Lock order: mu_ is never held across a UCX
// call (posting, testing or releasing a request, closing an endpoint),
// since the thread progressing the worker holds UCX's worker lock while it
// delivers a request message, and serving it takes mu_. Bounded: at most
// max_sessions sessions (the
// least recently used is closed to admit another) and max_pending_transfers
// transfers. REQUIRES: the Store outlives this object.
#ifndef KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_H_
#define KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "kvstore/core/store.h"
#include "kvstore/dataplane/ucx_arena_memory.h"
#include "kvtier/v1/data_plane.h"
#include "ucx/endpoint.h"
#include "ucx/memory.h"
#include "ucx/message.h"
#include "ucx/tag_receive.h"
#include "ucx/worker.h"

namespace kvtier::store {

struct DataPlaneOptions {
  // An uncommitted put reservation is aborted after this long. Default
  // 60000 ms. Range [1, 3600000].
  uint64_t transfer_timeout_ms = 60'000;
  // Most open sessions. Opening one more closes the least recently used
  // session of the owner (tenant) holding the most, the new one counted.
  // Default 1024. Range [1, 65536].
  uint32_t max_sessions = 1024;
  // Most put transfers pending at once, all sessions together. Default
  // 4096. Must be > 0.
  uint32_t max_pending_transfers = 4096;
  // Writes in flight per WriteToRegion. Default 64. Must be > 0.
  uint32_t window = 64;
  // The UCX settings of the context Create starts when it is given no
  // arena (ucx/context.h documents each default).
  ucx::UcxOptions ucx{};
  // The program that tries every client worker address before this
  // process's UCX sees it (ucx_address_probe.h). Default ""
  // (DefaultUcxProbePath(): kvtier-ucx-probe next to the executable).
  std::string address_probe;
  // How long a probe may take. Default 10 s. Must be > 0.
  absl::Duration address_probe_timeout = absl::Seconds(10);
  // Slots of a put transfer that ends uncommitted (aborted, expired, its
  // session closed, its commit failed) stay out of use this long
  // (ReserveOptions::release_delay): a client that copies into its mapping
  // of the arena may still be writing them. Default 10 s. Must be >= 0.
  absl::Duration released_slot_quarantine = absl::Seconds(10);

  // Whether clients are trusted with the whole arena (the server option
  // trusted_local_clients): OpenDataPlane then gives them its address and
  // remote key, and they write reserved slots and read RAM pages
  // themselves (mapped on one host), which is the fastest path; such a
  // client can read and write every page of every tenant. Default false:
  // the server moves every byte itself, between its arena and memory the
  // client registered (region writes and reads, tagged messages).
  bool expose_arena = false;

  // INVALID_ARGUMENT naming the first bad option.
  absl::Status Validate() const;
};

class UcxDataPlane : private ucx::MessageReceiver {
 public:
  using SessionId = wire::SessionId;
  struct Session;  // ucx_data_plane_session.h

  // Serves one request that came as an active message on an open session
  // (ucx_message.h): the op, the request's bytes; the reply's bytes or an
  // error for the client. Runs on a thread progressing the worker: it must
  // not wait on UCX.
  using RequestHandler = std::function<absl::StatusOr<std::string>(
      const SessionId& session_id, uint32_t op, absl::string_view request)>;

  struct OpenReply {
    SessionId session_id;
    std::string worker_address;
    uint64_t arena_address = 0;
    uint64_t arena_bytes = 0;
    std::string arena_rkey;
  };
  struct Slot {
    bool already_present = false;
    uint64_t arena_offset = 0;  // meaningful when !already_present
  };
  struct ReserveReply {
    uint64_t transfer_id = 0;
    std::vector<Slot> slots;
  };
  // One page for WriteToRegion.
  struct RegionWrite {
    const void* bytes = nullptr;
    uint64_t size = 0;
    uint64_t region_offset = 0;
  };

  // Starts UCX (on `ucx_arena`'s context when given), registers the
  // store's RAM region (or, when it is `ucx_arena`'s allocation, uses that
  // registration) and starts the progress thread. INVALID_ARGUMENT for bad
  // options or a store without a RAM region; the converted UCX error when
  // UCX cannot start.
  static absl::StatusOr<std::unique_ptr<UcxDataPlane>> Create(
      Store* store, const DataPlaneOptions& options,
      const std::shared_ptr<UcxArenaMemory>& ucx_arena = nullptr);
  ~UcxDataPlane() override;  // aborts pending transfers, closes sessions
  UcxDataPlane(const UcxDataPlane&) = delete;
  UcxDataPlane& operator=(const UcxDataPlane&) = delete;

  // Opens a session for `owner` (the tenant whose calls may use it; see
  // SessionOwner). Its id is 128 bits from the kernel's CSPRNG.
  // INVALID_ARGUMENT (empty, oversized, or an address UCX refuses or
  // chokes on in the probe), UNAVAILABLE (no probe, or no endpoint to the
  // client's worker, or `granted` (when given) false when the session is
  // about to be registered: what granted it was revoked meanwhile, and
  // CloseAll may have run already).
  absl::StatusOr<OpenReply> Open(absl::string_view client_worker_address, uint64_t owner = 0,
                                 const std::function<bool()>& granted = nullptr);
  // The owner given to Open; NOT_FOUND when `session_id` is not open.
  absl::StatusOr<uint64_t> SessionOwner(const SessionId& session_id);
  void Close(const SessionId& session_id);
  // Closes every session (their pending transfers end as at Close); their
  // clients open new ones. Returns how many were open.
  size_t CloseAll() ABSL_LOCKS_EXCLUDED(mu_);

  // NOT_FOUND (unknown session), RESOURCE_EXHAUSTED (max_pending_transfers,
  // or the store's own), and Store::Reserve's errors. `tagged`: also posts
  // a tagged receive into each new slot (tag transfer_id + page index).
  // `make_room` false (a caller on the progress thread): ReserveOptions'.
  absl::StatusOr<ReserveReply> ReservePut(const SessionId& session_id,
                                          absl::Span<const PutSpec> specs,
                                          bool tagged = false, bool make_room = true);
  // NOT_FOUND (unknown session or transfer), and Store::Commit's errors.
  // `checksums` (empty, or one per page) replace those given at ReservePut;
  // INVALID_ARGUMENT for another count, and the transfer stays pending.
  // A tagged transfer first waits for its receives: DEADLINE_EXCEEDED past
  // its expiry, UNAVAILABLE when a receive failed (nothing is committed
  // then, and the reservation is released once the receives let go).
  // `may_wait` false (a caller on the progress thread): a tagged transfer
  // is FAILED_PRECONDITION instead and stays pending.
  absl::StatusOr<std::vector<PutResult>> CommitPut(const SessionId& session_id,
                                                   uint64_t transfer_id,
                                                   absl::Span<const uint64_t> checksums = {},
                                                   bool may_wait = true);
  void AbortPut(const SessionId& session_id, uint64_t transfer_id);

  // NOT_FOUND when `session_id` is not open or is not `owner`'s (the same
  // answer for both).
  absl::Status CheckSession(const SessionId& session_id, uint64_t owner);
  // CheckSession's NOT_FOUND; other errors checked before any byte moves:
  // INVALID_ARGUMENT (bad rkey).
  absl::Status CheckRegion(const SessionId& session_id, uint64_t owner, absl::string_view rkey);
  // Writes every page into the client region at `address` (rkey packed by
  // the client) and flushes. NOT_FOUND (unknown session), UNAVAILABLE or
  // DEADLINE_EXCEEDED (the endpoint failed; the session is closed).
  absl::Status WriteToRegion(const SessionId& session_id, uint64_t address, absl::string_view rkey,
                             absl::Span<const RegionWrite> pages, absl::Time deadline);

  // Sends every page as a tagged message on the session's endpoint (the
  // client posted the receives) and waits until each send completed.
  // NOT_FOUND (unknown session), UNAVAILABLE or DEADLINE_EXCEEDED (the
  // endpoint failed; the session is closed).
  absl::Status SendToClient(const SessionId& session_id, absl::Span<const ucx::SendSegment> pages,
                            absl::Time deadline);

  // Reserves the pages, reads each one's bytes from the client region
  // (address + region_offsets[i], rkey packed by the client) into its slot,
  // and commits. NOT_FOUND (unknown session), UNAVAILABLE or
  // DEADLINE_EXCEEDED (the read failed; the session is closed), and
  // Store::Reserve/Commit's errors. Nothing stays reserved on any error.
  absl::StatusOr<std::vector<PutResult>> PullPut(const SessionId& session_id, uint64_t address,
                                                 absl::string_view rkey,
                                                 absl::Span<const PutSpec> specs,
                                                 absl::Span<const uint64_t> region_offsets,
                                                 absl::Time deadline);

  // Serves request messages from now on (an empty handler: no more); until
  // then they are answered UNIMPLEMENTED. Messages of unknown sessions are
  // answered NOT_FOUND. REQUIRES: what the handler uses outlives this object
  // or the handler's replacement.
  void SetRequestHandler(RequestHandler handler) ABSL_LOCKS_EXCLUDED(mu_);

  // Aborts transfers past their timeout and releases drained ones. Called
  // by the progress thread.
  void SweepExpired() ABSL_LOCKS_EXCLUDED(mu_);

  const DataPlaneOptions& options() const { return options_; }
  // Pending and draining transfers.
  size_t pending_transfers() const ABSL_LOCKS_EXCLUDED(mu_);
  size_t open_sessions() const ABSL_LOCKS_EXCLUDED(mu_);
  // Tagged messages that no transfer's receive wanted, dropped.
  uint64_t dropped_tagged_messages() const { return worker_->dropped_tagged_messages(); }

 private:
  struct Transfer {
    SessionId session_id;
    Reservation reservation;
    absl::Time expiry;
    // Tagged transfers: one posted receive per new slot. Destroyed before
    // the reservation is released.
    std::vector<std::unique_ptr<ucx::UcxTagReceive>> receives{};
  };

  UcxDataPlane(Store* store, const DataPlaneOptions& options,
               std::shared_ptr<ucx::UcxContext> context, std::unique_ptr<ucx::UcxWorker> worker,
               std::shared_ptr<const ucx::UcxMemory> arena);
  // The open session `session_id` names (now its most recently used), or
  // SessionNotOpen.
  absl::StatusOr<std::shared_ptr<Session>> FindSession(const SessionId& session_id)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The one answer for a session id that is not open (or not the caller's).
  static absl::Status SessionNotOpen(const SessionId& session_id);
  // The session's endpoint key for `rkey`, unpacked once per distinct key.
  absl::StatusOr<std::shared_ptr<ucx::UcxRemoteKey>> SessionKey(Session& session,
                                                                absl::string_view rkey);
  uint64_t NewIdLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Removes a session and returns what must be destroyed outside mu_.
  void RemoveSessionLocked(const SessionId& session_id,
                           std::vector<std::shared_ptr<Session>>* sessions,
                           std::vector<Transfer>* transfers) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Gives a transfer up: cancels its receives and releases its reservation
  // now, or (a receive still busy) moves it to draining_.
  void Retire(Transfer transfer) ABSL_LOCKS_EXCLUDED(mu_);
  // Posts the receives of a tagged transfer. On error the ones posted are
  // cancelled and done when this returns.
  absl::Status PostReceives(uint64_t transfer_id, Transfer* transfer);
  // A request message: served, then answered on its reply endpoint.
  void OnMessage(const ucx::ReceivedMessage& message) override ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<std::string> ServeMessage(const wire::RequestHeader& header,
                                           const ucx::ReceivedMessage& message)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Progresses until every receive of `transfer` is done or `deadline`.
  absl::Status AwaitReceives(Transfer* transfer, absl::Time deadline);

  // Const after construction.
  Store* const store_;
  const DataPlaneOptions options_;
  const std::shared_ptr<ucx::UcxContext> context_;
  const std::unique_ptr<ucx::UcxWorker> worker_;
  const std::shared_ptr<const ucx::UcxMemory> arena_;
  const uint8_t* const arena_base_;
  const std::string probe_path_;

  mutable absl::Mutex mu_;
  absl::flat_hash_map<SessionId, std::shared_ptr<Session>> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, Transfer> transfers_ ABSL_GUARDED_BY(mu_);
  // Ids of transfers whose receives are being posted (not yet in transfers_).
  absl::flat_hash_set<uint64_t> posting_ids_ ABSL_GUARDED_BY(mu_);
  std::vector<Transfer> draining_ ABSL_GUARDED_BY(mu_);
  uint64_t use_clock_ ABSL_GUARDED_BY(mu_) = 0;  // orders sessions by last use
  std::shared_ptr<const RequestHandler> request_handler_ ABSL_GUARDED_BY(mu_);

  // Last: stopped first, before anything it touches is destroyed.
  std::unique_ptr<ucx::UcxProgressThread> progress_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_DATAPLANE_UCX_DATA_PLANE_H_
