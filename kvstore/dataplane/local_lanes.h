// LocalLanes: the server's side of local lanes (proto/kvtier/v1/local_lane.h,
// DATA_PLANE.md "Local lanes"): page bytes of clients on this host move
// through memory segments the clients own and hand over, so that no client
// needs any address, key or mapping of the server's memory.
//
// The service issues a ticket to an authenticated caller (OpenLocalLane);
// the client connects to the abstract Unix socket, presents the ticket and
// passes its segment (a memfd sealed against shrinking); the lane then acts
// for the ticket's owner until either side closes it. Each lane has a
// thread of its own that reads one request at a time and answers it
// through the handler, which the service supplies: LocalLanes knows the
// framing, the tickets and the segments, not what a request means.
//
// What a hostile client can do, and what it gets: a wrong, reused or expired
// ticket, a bad hello, an fd that is not a sealed memfd, a segment of the
// wrong size, a frame over the bound or cut short -> the lane is refused or
// closed, nothing else changes. A client that stops reading its replies
// loses its lane after io_timeout. Lanes are bounded per tenant and in all,
// and so are the bytes of all mapped segments (a page the server writes
// into a segment the client has not touched is memory the server's
// process allocates).
//
// Thread-safety: thread-safe.
#ifndef KVTIER_KVSTORE_DATAPLANE_LOCAL_LANES_H_
#define KVTIER_KVSTORE_DATAPLANE_LOCAL_LANES_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/spin.h"
#include "kvstore/dataplane/client_memory.h"
#include "kvtier/v1/local_lane.h"

namespace kvtier::store {

struct LocalLaneOptions {
  // Open lanes (and tickets issued, not yet used) in all and per tenant.
  uint32_t max_lanes = 64;
  uint32_t max_lanes_per_tenant = 16;
  // One segment's size, and all mapped segments' together.
  uint64_t max_segment_bytes = uint64_t{1} << 30;
  uint64_t max_mapped_bytes = uint64_t{4} << 30;
  // One request or reply frame (a BatchGetResponse carries the pages that
  // did not fit the segment inline).
  uint32_t max_frame_bytes = uint32_t{256} << 20;
  // A ticket's life; how long the hello and each reply may take.
  absl::Duration ticket_ttl = absl::Seconds(10);
  absl::Duration io_timeout = absl::Seconds(10);
  // Direct transfers (ClientMemory) for clients that offer them.
  bool direct_transfers = true;

  // INVALID_ARGUMENT naming the first bad option.
  absl::Status Validate() const;
};

// Whom a lane acts for: what the service authenticated at OpenLocalLane.
struct LaneOwner {
  uint64_t tenant = 0;
  bool admin = false;
  bool may_write = false;  // the caller could store pages in this namespace
  std::string name;
};

class LocalLanes {
 public:
  // Answers one request: op and payload as received, the lane's segment
  // (the server's mapping of it), and the client's memory when the lane
  // has direct transfers (null otherwise). Its result is the reply's
  // payload; an error goes back as the reply's code and message, and the
  // lane stays.
  using Handler = std::function<absl::StatusOr<std::string>(
      const LaneOwner& owner, uint32_t op, absl::string_view request,
      absl::Span<uint8_t> segment, const ClientMemory* client)>;

  // Binds a fresh abstract socket name and starts accepting.
  static absl::StatusOr<std::unique_ptr<LocalLanes>> Start(const LocalLaneOptions& options,
                                                           Handler handler);
  // Closes every lane and joins every thread.
  ~LocalLanes();
  LocalLanes(const LocalLanes&) = delete;
  LocalLanes& operator=(const LocalLanes&) = delete;

  struct Ticket {
    std::string socket_name;   // abstract: without the leading NUL
    std::string ticket;        // kLaneSecretBytes
    std::string server_proof;  // kLaneSecretBytes
  };
  // A ticket for one lane acting for `owner`. RESOURCE_EXHAUSTED when the
  // owner's tenant, or the server, has its bound of lanes and tickets;
  // UNAVAILABLE when `granted` (if given) is false as the ticket is about
  // to be registered (what granted it was revoked meanwhile, and CloseAll
  // may have run already).
  absl::StatusOr<Ticket> Issue(const LaneOwner& owner,
                               const std::function<bool()>& granted = nullptr);

  // Closes every open lane and forgets every ticket (their clients open
  // new ones, authenticated again): for when the credentials change.
  void CloseAll();

  struct Stats {
    uint64_t open_lanes = 0;
    uint64_t lanes_opened = 0;
    uint64_t hellos_refused = 0;
    // Connections dropped before their hello because newer ones came while
    // the most were waiting (a local process needs no ticket to connect).
    uint64_t hellos_evicted = 0;
    uint64_t requests = 0;
    uint64_t mapped_bytes = 0;
    // Lanes opened with direct transfers, and offers of them declined (the
    // kernel refused the access, or the probe did not hold the ticket).
    uint64_t direct_lanes = 0;
    uint64_t direct_declined = 0;
  };
  Stats stats() const;
  const std::string& socket_name() const { return socket_name_; }
  const LocalLaneOptions& options() const { return options_; }

 private:
  using Secret = std::array<uint8_t, wire::kLaneSecretBytes>;
  struct PendingTicket {
    Secret secret;
    Secret proof;
    LaneOwner owner;
    absl::Time expiry;
  };
  struct Lane {
    int fd = -1;
    std::thread thread;
    std::atomic<bool> done{false};
    // Connected, its hello not read yet (guarded by mu_).
    bool awaiting_hello = true;
  };

  LocalLanes(const LocalLaneOptions& options, Handler handler, int listen_fd, int wake_fd,
             std::string socket_name);
  void AcceptLoop();
  void ServeLane(Lane* lane);
  // The hello: the ticket checked and spent, the segment checked and mapped.
  struct Opened {
    LaneOwner owner;
    Secret proof;
    uint8_t* segment = nullptr;
    uint64_t segment_bytes = 0;
    std::unique_ptr<ClientMemory> client;  // null: no direct transfers
  };
  absl::StatusOr<Opened> Welcome(Lane* lane);
  // The lane's hello has come (or its read failed): it no longer counts
  // among the connections awaiting one.
  void HelloRead(Lane* lane) ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<PendingTicket> SpendTicket(const Secret& secret);
  // Joins the threads of lanes that ended. With `all`, waits for every lane.
  void Reap(bool all);
  // Lanes and tickets of `tenant` (both count against the bounds).
  uint32_t HeldLocked(uint64_t tenant) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReleaseLocked(uint64_t tenant) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropExpiredTicketsLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const LocalLaneOptions options_;
  const Handler handler_;
  const int listen_fd_;
  const int wake_fd_;  // an eventfd that ends AcceptLoop
  const std::string socket_name_;

  mutable absl::Mutex mu_;
  // Keyed by the ticket's first 8 bytes; the whole secret is compared in
  // constant time.
  absl::flat_hash_map<uint64_t, PendingTicket> tickets_ ABSL_GUARDED_BY(mu_);
  // Open lanes plus unspent tickets, per tenant and in all.
  absl::flat_hash_map<uint64_t, uint32_t> held_ ABSL_GUARDED_BY(mu_);
  uint32_t held_total_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t mapped_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::list<Lane> lanes_ ABSL_GUARDED_BY(mu_);
  // Lanes with awaiting_hello set: at most kMaxPendingHellos.
  size_t awaiting_hellos_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::atomic<uint64_t> lanes_opened_{0};
  std::atomic<uint64_t> hellos_refused_{0};
  std::atomic<uint64_t> hellos_evicted_{0};
  std::atomic<uint64_t> requests_{0};
  std::atomic<uint64_t> open_lanes_{0};
  std::atomic<uint64_t> direct_lanes_{0};
  std::atomic<uint64_t> direct_declined_{0};
  // Lane threads polling for their next request, at most half the cores.
  SpinGate spin_gate_{SpinGate::HalfTheCores()};

  std::thread acceptor_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_DATAPLANE_LOCAL_LANES_H_
