// ClientDataPlane: the client's side of the UCX data plane (see
// kvstore/dataplane/DATA_PLANE.md): one UCX context and worker, a progress thread,
// the connection to one server session, and a bounded pool of registered
// receive regions. The StoreClients of a process share one per target
// unless told otherwise (ClientOptions::ucx_share_data_plane), and open its
// session once between them (ConnectOnce).
//
// A Connection is what OpenDataPlane gave: the session id, an endpoint to
// the server's worker and the unpacked remote key of its RAM arena. It is
// shared (std::shared_ptr) by the calls using it; Detach drops the client's
// reference after a failure or a server restart, and the next call opens a
// new session. Endpoints are reused by every call until then.
//
// Receive regions (for BatchGet) are allocated through UCX and registered
// once; a call leases one and returns it to the pool when done, so a region
// is written by one call at a time. At most kMaxIdleRegions stay pooled.
//
// Thread-safety: thread-safe. mu_ is never held across a UCX call (testing
// or releasing a request, closing an endpoint or a region): the thread that
// delivers a reply holds UCX's worker lock while it takes mu_.
#ifndef KVTIER_CLIENT_DATA_PLANE_H_
#define KVTIER_CLIENT_DATA_PLANE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "kvtier/v1/data_plane.h"
#include "kvtier/v1/store.pb.h"
#include "ucx/endpoint.h"
#include "ucx/memory.h"
#include "ucx/message.h"
#include "ucx/tag_receive.h"
#include "ucx/worker.h"

namespace kvtier::client {

class ClientDataPlane : private ucx::MessageReceiver {
 public:
  static constexpr size_t kMaxIdleRegions = 8;

  struct Connection {
    wire::SessionId session_id;
    uint64_t arena_address = 0;
    uint64_t arena_bytes = 0;
    // UcxEndpoint::AmTransport of the endpoint: what StoreClient's automatic
    // put mode decides by.
    std::string am_transport;
    // The arena mapped into this process (a server on this host reached
    // over shared memory, arena allocated by UCX): pages are copied into
    // their slots directly. Null otherwise.
    uint8_t* arena_mapped = nullptr;
    // Destroyed in reverse order: the key before the endpoint.
    std::unique_ptr<ucx::UcxEndpoint> endpoint;
    std::unique_ptr<ucx::UcxRemoteKey> arena_rkey;
  };

  // A leased receive region; returns to the pool when destroyed.
  class RegionLease {
   public:
    RegionLease(ClientDataPlane* owner, std::unique_ptr<ucx::UcxMemory> memory)
        : owner_(owner), memory_(std::move(memory)) {}
    ~RegionLease();
    RegionLease(RegionLease&&) = default;
    RegionLease& operator=(RegionLease&&) = delete;
    const ucx::UcxMemory& memory() const { return *memory_; }

   private:
    ClientDataPlane* owner_;
    std::unique_ptr<ucx::UcxMemory> memory_;
  };

  // Starts UCX (context, worker, progress thread); INVALID_ARGUMENT for bad
  // options, the converted UCX error when UCX cannot start.
  static absl::StatusOr<std::unique_ptr<ClientDataPlane>> Create(const ucx::UcxOptions& options);
  ~ClientDataPlane() override;

  const std::string& worker_address() const { return worker_->address(); }
  // For tagged receives (UcxTagReceive::Post) and progressing while waiting.
  ucx::UcxWorker* worker() const { return worker_.get(); }
  // A tag base (wire::IsTagBase) no earlier call returned.
  uint64_t NewTagBase() { return wire::NthTagBase(next_tag_.fetch_add(1) + 1); }
  // Keeps `region` out of the pool until every receive into it is done
  // (cancelled first); reaped by later LeaseRegion calls and at destruction.
  // For receives a failed call could not wait for.
  void Park(RegionLease region, std::vector<std::unique_ptr<ucx::UcxTagReceive>> receives)
      ABSL_LOCKS_EXCLUDED(mu_);

  // The current connection, or null when none is attached.
  std::shared_ptr<const Connection> connection() const ABSL_LOCKS_EXCLUDED(mu_);
  // Connects to the session `reply` describes and makes it current.
  // INVALID_ARGUMENT for a reply without address or key.
  absl::StatusOr<std::shared_ptr<const Connection>> Attach(const v1::OpenDataPlaneResponse& reply)
      ABSL_LOCKS_EXCLUDED(mu_);
  // The current connection, or else one to the session `open` opens (it
  // runs at most once at a time per plane, so clients sharing a plane open
  // one session between them). `*opened`: whether `open` ran and succeeded.
  absl::StatusOr<std::shared_ptr<const Connection>> ConnectOnce(
      absl::FunctionRef<absl::StatusOr<v1::OpenDataPlaneResponse>()> open, bool* opened)
      ABSL_LOCKS_EXCLUDED(mu_, open_mu_);
  // Drops `connection` if it is still the current one.
  void Detach(const std::shared_ptr<const Connection>& connection) ABSL_LOCKS_EXCLUDED(mu_);

  // A region of at least `bytes` (> 0).
  absl::StatusOr<RegionLease> LeaseRegion(uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  // Sends `request` as an active message (ucx_message.h, operation `op`) on
  // `connection`'s endpoint and waits, progressing the worker, for the
  // server's reply: its bytes, or the server's error as it sent it.
  // DEADLINE_EXCEEDED when no reply came by `deadline` (shared memory
  // cannot tell a dead server), UNAVAILABLE when the send failed.
  absl::StatusOr<std::string> Call(const Connection& connection, uint32_t op,
                                   std::string request, absl::Time deadline)
      ABSL_LOCKS_EXCLUDED(mu_);

 private:
  ClientDataPlane(std::unique_ptr<ucx::UcxContext> context,
                  std::unique_ptr<ucx::UcxWorker> worker)
      : context_(std::move(context)), worker_(std::move(worker)) {}
  void ReturnRegion(std::unique_ptr<ucx::UcxMemory> memory) ABSL_LOCKS_EXCLUDED(mu_);
  // A reply message: completes the call waiting for it, if any still is.
  void OnMessage(const ucx::ReceivedMessage& message) override ABSL_LOCKS_EXCLUDED(mu_);

  // One Call waiting for its reply.
  struct PendingReply {
    absl::Notification done;
    int32_t code = 0;     // written before `done`
    std::string payload;  // written before `done`
  };

  // Const after construction.
  const std::unique_ptr<ucx::UcxContext> context_;
  const std::unique_ptr<ucx::UcxWorker> worker_;

  absl::Mutex open_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // one ConnectOnce open at a time
  mutable absl::Mutex mu_;
  std::shared_ptr<const Connection> connection_ ABSL_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<ucx::UcxMemory>> idle_regions_ ABSL_GUARDED_BY(mu_);
  struct Parked {
    RegionLease region;  // destroyed after the receives into it
    std::vector<std::unique_ptr<ucx::UcxTagReceive>> receives;
  };
  std::vector<std::unique_ptr<Parked>> parked_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> next_tag_{0};
  uint64_t next_request_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::shared_ptr<PendingReply>> pending_ ABSL_GUARDED_BY(mu_);

  // Last: stopped first.
  std::unique_ptr<ucx::UcxProgressThread> progress_;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_DATA_PLANE_H_
