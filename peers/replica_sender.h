// The replicator's way to its peers: ReplicaPut through the gRPC client,
// one connection per member, page bytes inline. A module of its own so
// that kvstore/ (the replicator, the server) and client/ need not include
// each other.
//
// Thread-safety: the returned function is thread-safe.
#ifndef KVTIER_PEERS_REPLICA_SENDER_H_
#define KVTIER_PEERS_REPLICA_SENDER_H_

#include <functional>
#include <string>

#include "absl/status/status.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::peers {

// How a node dials its peers: an admin token (a file whose first line it
// is), and with `tls` the CA of the peers' certificates and, for mTLS,
// the node's own certificate and key. Empty strings: none.
struct PeerCredentials {
  std::string token_file;
  bool tls = false;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
};

using ReplicaSender =
    std::function<absl::Status(const v1::Member& to, const v1::ReplicaPutRequest& request)>;

// Stores each request at member `to` (store.proto, ReplicaPut); a member
// whose address changed gets a new connection.
ReplicaSender MakeReplicaSender(const PeerCredentials& credentials);

}  // namespace kvtier::peers

#endif  // KVTIER_PEERS_REPLICA_SENDER_H_
