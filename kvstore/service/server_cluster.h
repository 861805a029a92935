// kvtier-server's part in a cluster (kvstore/cluster/): joining it at
// start, the replicator that keeps pages where the member view places them,
// and draining (on SIGTERM, and for the Drain RPC).
//
// Thread-safety: as the membership and replicator they act on.
#ifndef KVTIER_KVSTORE_SERVICE_SERVER_CLUSTER_H_
#define KVTIER_KVSTORE_SERVICE_SERVER_CLUSTER_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvstore/cluster/membership.h"
#include "kvstore/cluster/replicator.h"
#include "kvstore/core/store.h"
#include "kvstore/service/server_config.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::store {

// Registers this node (etcd, a static list, or a list of one when it is not
// part of a cluster; `port` is the one it bound) and marks it up: it serves
// its recovered pages from the start.
absl::StatusOr<std::unique_ptr<cluster::Membership>> JoinCluster(const ServerSettings& settings,
                                                                 int port,
                                                                 const StoreStats& recovered);

// The replicator of a node in a cluster (null outside one), fed every view.
std::unique_ptr<cluster::Replicator> StartReplicator(const ServerSettings& settings, Store* store,
                                                     cluster::Membership* membership);

// Marks this node draining and waits at most `wait` while the replicator
// (null: none) hands its pages to their new owners; fills `response`.
absl::Status DrainNode(cluster::Membership* membership, cluster::Replicator* replicator,
                       absl::Duration wait, v1::DrainResponse* response);

// DrainNode for at most drain_timeout_s, its answer only logged.
void DrainOnShutdown(const ServerSettings& settings, cluster::Membership* membership,
                     cluster::Replicator* replicator);

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_SERVER_CLUSTER_H_
