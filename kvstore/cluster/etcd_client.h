// EtcdClient: the few calls of etcd's v3 gRPC API that membership needs
// (lease grant/keep-alive/revoke, put, prefix range, prefix watch), over a
// fixed list of plaintext endpoints. Private to kvstore/cluster.
//
// Endpoints: calls go to the current endpoint; a call failing with
// UNAVAILABLE or DEADLINE_EXCEEDED moves the client to the next one (once
// per failure generation, however many calls saw it) and cancels watches
// still open on the old one, so that they reconnect too.
//
// Errors: every gRPC status is converted here (v1::FromGrpcStatus) and
// prefixed with the call and the endpoint. Each unary call is bounded by
// `call_timeout`; a watch runs until it fails or Shutdown.
//
// Thread-safety: all methods are thread-safe.
#ifndef KVTIER_KVSTORE_CLUSTER_ETCD_CLIENT_H_
#define KVTIER_KVSTORE_CLUSTER_ETCD_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace grpc {
class ClientContext;
class Status;
}  // namespace grpc

namespace kvtier::cluster {

struct EtcdKeyValue {
  std::string key;
  std::string value;
  int64_t mod_revision = 0;
};

struct EtcdRange {
  // The store's revision when it was read.
  int64_t revision = 0;
  std::vector<EtcdKeyValue> kvs;
};

struct EtcdEvent {
  bool is_delete = false;
  // For a delete: the key, and mod_revision the deletion's revision.
  EtcdKeyValue kv;
};

struct EtcdWatchBatch {
  // The response header's revision: >= every event's.
  int64_t revision = 0;
  std::vector<EtcdEvent> events;
};

// The smallest key after every key starting with `prefix` (etcd's
// range_end for a prefix); "\0" when there is none.
std::string PrefixRangeEnd(const std::string& prefix);

class EtcdClient {
 public:
  // Tries `endpoints` in order, round after round, until one connects:
  // UNAVAILABLE naming them all after `connect_timeout`.
  static absl::StatusOr<std::unique_ptr<EtcdClient>> Connect(std::vector<std::string> endpoints,
                                                             absl::Duration connect_timeout,
                                                             absl::Duration call_timeout);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // A new lease's id.
  absl::StatusOr<int64_t> LeaseGrant(int64_t ttl_s);
  // One keep-alive, bounded by `timeout`: the lease's remaining TTL in
  // seconds, <= 0 when etcd no longer has the lease.
  absl::StatusOr<int64_t> LeaseKeepAlive(int64_t lease_id, absl::Duration timeout);
  // Works after Shutdown too: it is the goodbye.
  absl::Status LeaseRevoke(int64_t lease_id, absl::Duration timeout);
  // The store's revision after the put.
  absl::StatusOr<int64_t> Put(const std::string& key, const std::string& value, int64_t lease_id);
  absl::StatusOr<EtcdRange> RangePrefix(const std::string& prefix);

  // Watches keys starting with `prefix` from `start_revision` and calls
  // `on_batch` for each response carrying events, on this thread. Returns
  // only when the watch ends, never OK: OUT_OF_RANGE when start_revision
  // was compacted, CANCELLED after Shutdown or an endpoint change,
  // otherwise the stream's error.
  absl::Status WatchPrefix(const std::string& prefix, int64_t start_revision,
                           const std::function<void(const EtcdWatchBatch&)>& on_batch);

  // Cancels the calls in flight and fails later ones (but LeaseRevoke) with
  // CANCELLED. Idempotent.
  void Shutdown();

 private:
  struct Endpoint;
  class LiveCall;
  struct CallInfo {
    int64_t generation = 0;
    bool is_watch = false;
  };

  EtcdClient(std::vector<std::unique_ptr<Endpoint>> endpoints, size_t current,
             absl::Duration call_timeout);

  // The endpoint calls go to now, and its generation.
  const Endpoint& Current(int64_t* generation) const;
  // Converts `status` of a call made at `generation`; moves to the next
  // endpoint when it says the endpoint is unreachable.
  absl::Status Convert(const char* call, const Endpoint& endpoint, int64_t generation,
                       const grpc::Status& status);
  void NextEndpoint(int64_t generation);
  void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) const;

  // Const after construction.
  const std::vector<std::unique_ptr<Endpoint>> endpoints_;
  const absl::Duration call_timeout_;

  mutable absl::Mutex mu_;
  size_t current_ ABSL_GUARDED_BY(mu_);
  // Bumped at each endpoint change.
  int64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
  // Calls in flight, for Shutdown and endpoint changes to cancel. Bounded
  // by the calling threads: each has at most one call in flight.
  absl::flat_hash_map<grpc::ClientContext*, CallInfo> live_calls_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvtier::cluster

#endif  // KVTIER_KVSTORE_CLUSTER_ETCD_CLIENT_H_
