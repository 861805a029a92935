// The client's side of local lanes (proto/kvtier/v1/local_lane.h,
// kvstore/dataplane/DATA_PLANE.md "Local lanes"): a connection to the
// server's abstract Unix socket and a memory segment of this process that
// the server maps, so that page bytes move by memory copies on one host
// while the server gives out nothing of its own memory.
//
// LocalLane is one lane (one request at a time); LanePool keeps a
// StoreClient's lanes, opens them on demand up to a bound, and backs off
// when they cannot be opened (another host or network namespace, a server
// without lanes).
//
// Thread-safety: a LocalLane is used by one thread at a time (LanePool
// hands each to one caller); LanePool is thread-safe.
#ifndef KVTIER_CLIENT_LOCAL_LANE_H_
#define KVTIER_CLIENT_LOCAL_LANE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "google/protobuf/message_lite.h"

namespace kvtier::client {

class LocalLane {
 public:
  // What OpenLocalLane answered.
  struct Grant {
    std::string socket_name;
    std::string ticket;
    std::string server_proof;
  };

  // Creates the segment (a memfd of `segment_bytes`, sealed against
  // shrinking and growing), connects, presents the ticket with the segment
  // and checks the server's proof. With `offer_direct` the hello offers
  // direct transfers (the server copies pages between this process's own
  // buffers and its store, where the kernel lets it; direct()). UNAVAILABLE when the socket cannot be
  // reached (the server is on another host or in another network
  // namespace); the server's code and message when it refused the lane;
  // PERMISSION_DENIED when the peer's proof is wrong (whoever answered is
  // not the server that issued the ticket; nothing was written).
  static absl::StatusOr<std::unique_ptr<LocalLane>> Open(const Grant& grant,
                                                         uint64_t segment_bytes,
                                                         absl::Duration timeout,
                                                         bool offer_direct);
  ~LocalLane();
  LocalLane(const LocalLane&) = delete;
  LocalLane& operator=(const LocalLane&) = delete;

  // This process's mapping of the segment.
  absl::Span<uint8_t> segment() const { return {segment_, segment_bytes_}; }

  // Sends one request and returns its reply's payload, or the reply's code
  // and message. UNAVAILABLE when the lane failed (closed, cut, a bad
  // reply) and DEADLINE_EXCEEDED past `timeout`: the lane is then broken
  // (broken() is true) and must be dropped. INVALID_ARGUMENT for a request
  // over the server's frame bound, before anything is sent.
  absl::StatusOr<std::string> Call(uint32_t op, const google::protobuf::MessageLite& request,
                                   absl::Duration timeout);
  bool broken() const { return broken_; }
  // The server accepted direct transfers on this lane: puts may name pages
  // by address (PutPage.client_address), gets may name destination buffers
  // (BatchGetRequest.lane_destinations).
  bool direct() const { return direct_; }

 private:
  LocalLane(int fd, uint8_t* segment, uint64_t segment_bytes, uint32_t max_frame_bytes,
            bool direct)
      : fd_(fd), segment_(segment), segment_bytes_(segment_bytes),
        max_frame_bytes_(max_frame_bytes), direct_(direct) {}

  const int fd_;
  uint8_t* const segment_;
  const uint64_t segment_bytes_;
  const uint32_t max_frame_bytes_;
  const bool direct_;
  uint64_t next_request_ = 1;
  bool broken_ = false;
  std::string buffer_;
};

class LanePool {
 public:
  struct Options {
    uint32_t max_lanes = 4;
    uint64_t segment_bytes = uint64_t{64} << 20;
    absl::Duration timeout = absl::Seconds(30);
    bool offer_direct = true;  // LocalLane::Open's
    // After a failure to open a lane, no new try for this long, doubling
    // with each failure in a row up to 64 times.
    absl::Duration retry_interval = absl::Seconds(1);
  };
  // Asks the server for a ticket (the OpenLocalLane RPC).
  using GrantFn = std::function<absl::StatusOr<LocalLane::Grant>()>;

  LanePool(const Options& options, GrantFn grant) : options_(options), grant_(std::move(grant)) {}

  // A lane for one caller: an idle one, a new one, or (at the bound) the
  // next one another caller returns. Null when no lane can be had now.
  class Lease {
   public:
    Lease() = default;
    Lease(LanePool* pool, std::unique_ptr<LocalLane> lane) : pool_(pool), lane_(std::move(lane)) {}
    Lease(Lease&&) = default;
    Lease& operator=(Lease&&) = default;
    ~Lease() {
      if (lane_ != nullptr) pool_->Return(std::move(lane_));
    }
    LocalLane* operator->() const { return lane_.get(); }
    LocalLane& operator*() const { return *lane_; }
    explicit operator bool() const { return lane_ != nullptr; }

   private:
    LanePool* pool_ = nullptr;
    std::unique_ptr<LocalLane> lane_;
  };
  Lease Acquire();

  uint64_t lanes_opened() const;
  const Options& options() const { return options_; }

 private:
  void Return(std::unique_ptr<LocalLane> lane);

  const Options options_;
  const GrantFn grant_;
  mutable absl::Mutex mu_;
  std::vector<std::unique_ptr<LocalLane>> idle_ ABSL_GUARDED_BY(mu_);
  uint32_t open_ ABSL_GUARDED_BY(mu_) = 0;  // idle, in use, or being opened
  absl::Time next_try_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  int failures_ ABSL_GUARDED_BY(mu_) = 0;  // in a row
  uint64_t opened_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_LOCAL_LANE_H_
