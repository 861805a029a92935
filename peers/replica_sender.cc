#include "peers/replica_sender.h"

#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "client/store_client.h"
#include "common/status_macros.h"

namespace kvtier::peers {
namespace {

class Peers {
 public:
  explicit Peers(const PeerCredentials& credentials) {
    options_.token_file = credentials.token_file;
    options_.tls = credentials.tls;
    options_.tls_ca_file = credentials.tls_ca_file;
    options_.tls_cert_file = credentials.tls_cert_file;
    options_.tls_key_file = credentials.tls_key_file;
    options_.use_ucx = false;
    options_.local_lanes = false;
  }

  absl::Status Send(const v1::Member& to, const v1::ReplicaPutRequest& request) {
    ASSIGN_OR_RETURN(std::shared_ptr<client::StoreClient> peer, PeerFor(to));
    return peer->ReplicaPut(request).status();
  }

 private:
  absl::StatusOr<std::shared_ptr<client::StoreClient>> PeerFor(const v1::Member& member) {
    absl::MutexLock lock(&mu_);
    auto it = peers_.find(member.id());
    if (it != peers_.end() && it->second->target() == member.address()) return it->second;
    ASSIGN_OR_RETURN(std::unique_ptr<client::StoreClient> made,
                     client::StoreClient::Connect(member.address(), options_));
    std::shared_ptr<client::StoreClient> peer = std::move(made);
    peers_[member.id()] = peer;
    return peer;
  }

  client::ClientOptions options_;  // const after construction
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<client::StoreClient>> peers_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace

ReplicaSender MakeReplicaSender(const PeerCredentials& credentials) {
  auto peers = std::make_shared<Peers>(credentials);
  return [peers](const v1::Member& to, const v1::ReplicaPutRequest& request) {
    return peers->Send(to, request);
  };
}

}  // namespace kvtier::peers
