#include "kvstore/service/server_cluster.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "peers/replica_sender.h"

namespace kvtier::store {
namespace {

// The member record this node publishes: its dialable address (the listen
// address with the port bound, unless advertise_address names one) and its
// tiers' capacities.
v1::Member SelfMember(const ServerSettings& settings, int port) {
  v1::Member self;
  self.set_id(settings.node_id);
  std::string address = settings.advertise_address;
  if (address.empty()) {
    address = absl::StrCat(settings.listen.substr(0, settings.listen.rfind(':')), ":", port);
  }
  self.set_address(address);
  self.set_state(v1::MEMBER_JOINING);
  self.set_ram_capacity_bytes(settings.store.ram.capacity_bytes);
  self.set_disk_capacity_bytes(settings.store.disk.capacity_bytes);
  self.set_started_unix_ms(static_cast<uint64_t>(absl::ToUnixMillis(absl::Now())));
  return self;
}

}  // namespace

// Registers this node (etcd, a static list, or a list of one when it is not
// part of a cluster) and marks it up: it serves its recovered pages from
// the start.
absl::StatusOr<std::unique_ptr<cluster::Membership>> JoinCluster(const ServerSettings& settings,
                                                                 int port,
                                                                 const StoreStats& recovered) {
  v1::Member self = SelfMember(settings, port);
  std::unique_ptr<cluster::Membership> membership;
  if (!settings.etcd_endpoints.empty()) {
    cluster::EtcdMembershipOptions options;
    options.endpoints = settings.etcd_endpoints;
    options.prefix = absl::StrCat("/kvtier/", settings.cluster_name, "/members/");
    options.lease_ttl = absl::Seconds(settings.lease_ttl_s);
    ASSIGN_OR_RETURN(membership, cluster::StartEtcdMembership(options, self));
  } else {
    std::vector<v1::Member> members = settings.static_members;
    if (members.empty()) members.push_back(self);
    for (v1::Member& member : members) {
      if (member.id() == self.id()) member = self;
    }
    ASSIGN_OR_RETURN(membership, cluster::StartStaticMembership(std::move(members), self.id()));
  }
  RETURN_IF_ERROR(membership->SetSelfState(v1::MEMBER_UP));
  const std::shared_ptr<const cluster::MemberView> view = membership->View();
  KVTIER_LOG(INFO) << "member up node_id=" << self.id() << " address=" << self.address()
                   << " source="
                   << (settings.etcd_endpoints.empty()
                           ? (settings.static_members.empty() ? "none (one node)" : "static list")
                           : "etcd")
                   << " members=" << view->members.size() << " revision=" << view->revision
                   << " pages=" << recovered.ram.pages + recovered.disk.pages;
  return membership;
}

// The replicator of a node in a cluster (null outside one), fed every view.
std::unique_ptr<cluster::Replicator> StartReplicator(const ServerSettings& settings, Store* store,
                                                     cluster::Membership* membership) {
  if (!settings.clustered()) return nullptr;
  cluster::ReplicatorOptions options;
  options.replicas = settings.replicas;
  options.unpinned_bytes_per_s = settings.rebalance_bytes_per_s;
  peers::PeerCredentials credentials;
  credentials.token_file = settings.peer_token_file;
  if (settings.tls()) {
    credentials.tls = true;
    credentials.tls_ca_file = settings.peer_tls_ca_file;
    if (!settings.tls_client_ca_file.empty()) {
      credentials.tls_cert_file = settings.tls_cert_file;
      credentials.tls_key_file = settings.tls_key_file;
    }
  }
  options.send = peers::MakeReplicaSender(credentials);
  auto replicator = std::make_unique<cluster::Replicator>(store, settings.node_id,
                                                          membership->View(), options);
  membership->SetListener([r = replicator.get()](std::shared_ptr<const cluster::MemberView> view) {
    r->OnView(std::move(view));
  });
  return replicator;
}

// Marks this node draining and waits at most `wait` while the replicator
// hands its pages to their new owners (SIGTERM, and the Drain RPC).
absl::Status DrainNode(cluster::Membership* membership, cluster::Replicator* replicator,
                       absl::Duration wait, v1::DrainResponse* response) {
  if (absl::Status draining = membership->SetSelfState(v1::MEMBER_DRAINING); !draining.ok()) {
    KVTIER_LOG(WARNING) << "cannot announce draining: " << draining;
    return draining;
  }
  response->set_node_id(membership->self_id());
  if (replicator == nullptr) {
    response->set_handed_off(true);
    return absl::OkStatus();
  }
  const absl::Time start = absl::Now();
  replicator->OnView(membership->View());
  const bool done = replicator->AwaitIdle(start + wait);
  const cluster::ReplicatorStats stats = replicator->stats();
  response->set_handed_off(done);
  response->set_pages_copied(stats.pages_copied);
  response->set_copy_failures(stats.copy_failures);
  KVTIER_LOG(INFO) << "drain " << (done ? "done" : "not done yet") << " pages_copied="
                   << stats.pages_copied << " copy_failures=" << stats.copy_failures
                   << " seconds=" << absl::ToDoubleSeconds(absl::Now() - start);
  return absl::OkStatus();
}

void DrainOnShutdown(const ServerSettings& settings, cluster::Membership* membership,
                     cluster::Replicator* replicator) {
  v1::DrainResponse ignored;
  DrainNode(membership, replicator, absl::Seconds(settings.drain_timeout_s), &ignored)
      .IgnoreError();
}

}  // namespace kvtier::store
