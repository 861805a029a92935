// ServerMetrics: kvtier-server's Prometheus metrics (prometheus-cpp),
// served by its exposer on their own port (`metrics_listen`,
// config.proto).
//
//   ASSIGN_OR_RETURN(auto metrics, ServerMetrics::Start("127.0.0.1:9464"));
//   builder.experimental().SetInterceptorCreators(...metrics->RpcInterceptorFactory()...);
//   metrics->SetStore(store, service, access);        // before serving
//   metrics->SetCluster(membership, replicator);      // once joined
//
// Two kinds of metrics:
//   - read at scrape time from the store, the service, the membership and
//     the replicator (a collector: tiers, tenants, pins, data paths,
//     lookups, cluster members, replication, event streams). Exact: they
//     are the store's own counters. A scrape costs one Store::Stats(), an
//     O(pages) walk under the store's lock.
//   - recorded per RPC by a gRPC server interceptor: each call's duration
//     (unary calls) and its status code, by method. Only the store's and
//     the health service's methods get their own label; any other name a
//     client sends counts as "other", so clients cannot grow the label set.
//
// Names follow Prometheus' conventions: a `kvtier_` prefix, base units in
// the name (`_bytes`, `_seconds`), `_total` on counters. FamilyNames()
// lists every family, for the dashboard and alert checks.
//
// It shows tenant names and usage, never page bytes or keys. A server
// with an access file serves it only to a `role=metrics` credential (HTTP
// Basic: the line's tenant name and token), which calls no RPC; without
// one it has no authentication, as the server's RPCs have none. Over
// plain HTTP the token travels in clear: bind it to loopback or a network
// only Prometheus reaches.
//
// Thread-safety: thread-safe. The sources must outlive the metrics.
#ifndef KVTIER_KVSTORE_METRICS_SERVER_METRICS_H_
#define KVTIER_KVSTORE_METRICS_SERVER_METRICS_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/server_interceptor.h"
#include "kvstore/access/access_control.h"
#include "kvstore/cluster/membership.h"
#include "kvstore/cluster/replicator.h"
#include "kvstore/core/store.h"
#include "kvstore/service/service.h"

namespace prometheus {
class Exposer;
class Registry;
}  // namespace prometheus

namespace kvtier::store {

class ServerMetrics {
 public:
  // Serves /metrics on `listen` (host:port; port 0 picks a free one).
  // INVALID_ARGUMENT for a malformed address, UNAVAILABLE when it cannot
  // be bound. Empty `listen`: no endpoint (Render still works). With
  // `access` (which must outlive this), a scrape needs HTTP Basic
  // credentials of a `role=metrics` line of the current access table (its
  // tenant name and its token); anything else is 401.
  static absl::StatusOr<std::unique_ptr<ServerMetrics>> Start(
      const std::string& listen, const access::AccessControl* access = nullptr);
  ~ServerMetrics();
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // The bound port; 0 without an endpoint.
  int port() const { return port_; }

  // Records every RPC of the server built with it. Call once per server.
  std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> RpcInterceptorFactory();

  // What scrapes read. `access` may be null (tenants are named by tag).
  void SetStore(Store* store, const KvStoreService* service, const access::AccessControl* access)
      ABSL_LOCKS_EXCLUDED(mu_);
  // Either may be null (a node outside a cluster has no replicator).
  void SetCluster(const cluster::Membership* membership, const cluster::Replicator* replicator)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Every metric in Prometheus' text format, as /metrics answers.
  std::string Render() const;

  // Every metric family the server exports (histograms by their base name).
  static std::vector<std::string> FamilyNames();

  class Collector;
  class RpcRecorder;

 private:
  ServerMetrics();

  mutable absl::Mutex mu_;
  Store* store_ ABSL_GUARDED_BY(mu_) = nullptr;
  const KvStoreService* service_ ABSL_GUARDED_BY(mu_) = nullptr;
  const access::AccessControl* access_ ABSL_GUARDED_BY(mu_) = nullptr;
  const cluster::Membership* membership_ ABSL_GUARDED_BY(mu_) = nullptr;
  const cluster::Replicator* replicator_ ABSL_GUARDED_BY(mu_) = nullptr;

  std::shared_ptr<prometheus::Registry> registry_;  // the RPC families
  std::shared_ptr<Collector> collector_;            // the scrape-time ones
  std::shared_ptr<RpcRecorder> rpcs_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_METRICS_SERVER_METRICS_H_
