#include "kvstore/service/server_flags.h"

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "common/status_macros.h"

ABSL_FLAG(std::string, config, "", "Server config file (protobuf text format, see config.proto)");
ABSL_FLAG(std::string, listen, "127.0.0.1:50051", "host:port to listen on; port 0 picks one");
ABSL_FLAG(std::string, data_dir, "./kvtier-data", "Directory of the RocksDB tier");
ABSL_FLAG(uint64_t, ram_bytes, uint64_t{1} << 30, "Capacity of the host-RAM tier, bytes");
ABSL_FLAG(uint64_t, disk_bytes, uint64_t{8} << 30, "Capacity of the disk tier, bytes");
ABSL_FLAG(double, ram_high_watermark, 0.90, "RAM tier high watermark (fraction)");
ABSL_FLAG(double, ram_low_watermark, 0.80, "RAM tier low watermark (fraction)");
ABSL_FLAG(double, disk_high_watermark, 0.90, "Disk tier high watermark (fraction)");
ABSL_FLAG(double, disk_low_watermark, 0.80, "Disk tier low watermark (fraction)");
ABSL_FLAG(std::string, ram_policy, "lru", "RAM tier eviction policy: lru or s3fifo");
ABSL_FLAG(std::string, disk_policy, "lru", "Disk tier eviction policy: lru or s3fifo");
ABSL_FLAG(uint32_t, max_batch_pages, 1024, "Most pages in one batch request");
ABSL_FLAG(uint32_t, max_lookup_pages, 65536, "Longest Lookup chain");
ABSL_FLAG(uint32_t, max_lookup_entries, uint32_t{1} << 20,
          "Most chain x layers entries in one Lookup");
ABSL_FLAG(uint32_t, promote_after_reads, 2, "Promote a disk page to RAM on its Nth read");
ABSL_FLAG(uint64_t, max_pin_ttl_ms, uint64_t{24} * 3600 * 1000, "Longest pin TTL, ms");
ABSL_FLAG(uint32_t, max_pins, 1 << 20, "Most live pins at once");
ABSL_FLAG(bool, verify_on_open, true,
          "Verify disk page checksums in the background after start (reads always verify)");
ABSL_FLAG(bool, prefault_ram, false,
          "Commit the whole RAM tier at start, so that no put pays a first-touch page fault");
ABSL_FLAG(uint64_t, max_message_bytes, uint64_t{256} << 20, "Largest gRPC message, bytes");
ABSL_FLAG(uint64_t, max_inflight_bytes, uint64_t{1} << 30,
          "Most bytes requests and replies hold at once outside the tiers (half gRPC's)");
ABSL_FLAG(uint64_t, shutdown_demote_ms, 0,
          "At shutdown, write RAM-only pages to disk for at most this many ms (0: off)");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warning or error");
ABSL_FLAG(std::string, log_format, "text", "text, or json: one JSON object per line");
ABSL_FLAG(bool, ucx, true, "Serve page bytes over the UCX data plane (else inline in gRPC)");
ABSL_FLAG(uint64_t, ucx_transfer_timeout_ms, 60'000,
          "Abort a data-plane put not committed within this many ms");
ABSL_FLAG(uint32_t, ucx_max_sessions, 1024, "Most open data-plane sessions");
ABSL_FLAG(std::string, ucx_transports, "^tcp",
          "UCX transports of the data plane (UCX_TLS syntax; UCX_TLS in the environment wins)");
ABSL_FLAG(bool, ucx_mutex_locks, true,
          "Mutex (else spinlock) for the data plane's UCX worker (UCX_USE_MT_MUTEX wins)");
ABSL_FLAG(std::string, port_file, "", "Write the bound port here once listening");
ABSL_FLAG(std::string, tls_cert_file, "", "TLS: the server's certificate chain (PEM)");
ABSL_FLAG(std::string, tls_key_file, "", "TLS: the server's private key (PEM)");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "mTLS: CAs (PEM) that sign the client certificates the server requires");
ABSL_FLAG(bool, allow_insecure, false,
          "Allow plaintext on a non-loopback address, and the UCX data plane beside TLS");
ABSL_FLAG(bool, enable_reflection, false, "Serve gRPC server reflection");
ABSL_FLAG(std::string, access_file, "",
          "Tokens and client certificates allowed in, with their tenants and roles "
          "(reloaded on SIGHUP)");
ABSL_FLAG(uint32_t, tenant_max_pins, 0,
          "Most live pins of one tenant; 0: no quota. Not given, with an access_file: a "
          "quarter of max_pins");
ABSL_FLAG(uint64_t, tenant_max_pinned_bytes, 0,
          "Most bytes of one tenant's pinned pages; 0: no quota. Not given, with an "
          "access_file: a quarter of the smaller tier");
ABSL_FLAG(uint64_t, tenant_max_ram_bytes, 0,
          "Most bytes of one tenant in the RAM tier (its puts demote its own pages first); "
          "0: no quota");
ABSL_FLAG(uint64_t, tenant_max_disk_bytes, 0,
          "Most bytes of one tenant in the disk tier (its own pages are dropped first); "
          "0: no quota");
ABSL_FLAG(bool, local_lanes, true,
          "Serve local lanes: same-host clients move page bytes through memory of their own "
          "that the server copies (not with trusted_local_clients)");
ABSL_FLAG(uint32_t, local_max_lanes, 64, "Most local lanes open at once");
ABSL_FLAG(uint32_t, local_max_lanes_per_tenant, 16, "Most local lanes of one tenant");
ABSL_FLAG(bool, local_direct_transfers, true,
          "On local lanes, copy pages straight between a same-user client's own buffers and "
          "the store (cross-memory attach) where the kernel allows it");
ABSL_FLAG(std::string, node_id, "local", "This node's id in the cluster ([A-Za-z0-9._-], 1..64)");
ABSL_FLAG(std::string, advertise_address, "",
          "host:port other nodes and clients dial for this node (default: listen, bound port)");
ABSL_FLAG(std::vector<std::string>, etcd_endpoints, {},
          "etcd client endpoints host:port,... to register and watch members in");
ABSL_FLAG(std::string, cluster_name, "default", "Members register under /kvtier/NAME/members/");
ABSL_FLAG(uint32_t, lease_ttl_s, 10, "Seconds after its last keep-alive a silent node is down");
ABSL_FLAG(std::vector<std::string>, static_members, {},
          "A fixed member list id=host:port,... (this node among them), instead of etcd");
ABSL_FLAG(uint32_t, replicas, 2, "Copies of each page the cluster keeps");
ABSL_FLAG(std::string, peer_token_file, "", "Admin token this node presents to its peers");
ABSL_FLAG(std::string, peer_tls_ca_file, "", "CA of the peers' certificates (TLS clusters)");
ABSL_FLAG(uint32_t, drain_timeout_s, 30,
          "On SIGTERM in a cluster: most seconds to hand pages to their new owners");
ABSL_FLAG(std::string, metrics_listen, "",
          "host:port of the Prometheus /metrics endpoint (no authentication); empty: none");
ABSL_FLAG(uint64_t, rebalance_bytes_per_s, uint64_t{128} << 20,
          "After members change: bytes/s of unpinned pages copied to their new owners in the "
          "background; 0: they move as they are read");
ABSL_FLAG(uint32_t, event_log_capacity, 1 << 18,
          "Cache events kept for WatchCacheEvents streams to resume from; 0: none");
ABSL_FLAG(uint32_t, max_event_watchers, 64, "Most open cache event streams");
ABSL_FLAG(uint32_t, max_event_watchers_per_tenant, 8, "Most open cache event streams of a tenant");
ABSL_FLAG(bool, trusted_local_clients, false,
          "Give data-plane clients the RAM arena (fastest; each can read and write every page "
          "of every tenant)");

namespace kvtier::store {
namespace {

// Names of the flags given on the command line ("--x", "--x=v", "-x",
// "--nox"); absl does not expose this publicly in the Debian version.
absl::flat_hash_set<std::string>& GivenFlags() {
  static auto* given = new absl::flat_hash_set<std::string>();
  return *given;
}

bool Given(absl::string_view name) { return GivenFlags().contains(name); }

// The config fields whose flags were given on the command line.
v1::ServerConfig OverridesFromFlags() {
  v1::ServerConfig c;
  if (Given("listen")) c.set_listen(absl::GetFlag(FLAGS_listen));
  if (Given("data_dir")) c.set_data_dir(absl::GetFlag(FLAGS_data_dir));
  if (Given("ram_bytes")) c.mutable_ram()->set_capacity_bytes(absl::GetFlag(FLAGS_ram_bytes));
  if (Given("disk_bytes")) c.mutable_disk()->set_capacity_bytes(absl::GetFlag(FLAGS_disk_bytes));
  if (Given("ram_high_watermark")) {
    c.mutable_ram()->set_high_watermark(absl::GetFlag(FLAGS_ram_high_watermark));
  }
  if (Given("ram_low_watermark")) {
    c.mutable_ram()->set_low_watermark(absl::GetFlag(FLAGS_ram_low_watermark));
  }
  if (Given("disk_high_watermark")) {
    c.mutable_disk()->set_high_watermark(absl::GetFlag(FLAGS_disk_high_watermark));
  }
  if (Given("disk_low_watermark")) {
    c.mutable_disk()->set_low_watermark(absl::GetFlag(FLAGS_disk_low_watermark));
  }
  if (Given("ram_policy")) c.mutable_ram()->set_policy(absl::GetFlag(FLAGS_ram_policy));
  if (Given("disk_policy")) c.mutable_disk()->set_policy(absl::GetFlag(FLAGS_disk_policy));
  if (Given("max_batch_pages")) c.set_max_batch_pages(absl::GetFlag(FLAGS_max_batch_pages));
  if (Given("max_lookup_pages")) c.set_max_lookup_pages(absl::GetFlag(FLAGS_max_lookup_pages));
  if (Given("max_lookup_entries")) {
    c.set_max_lookup_entries(absl::GetFlag(FLAGS_max_lookup_entries));
  }
  if (Given("promote_after_reads")) {
    c.set_promote_after_reads(absl::GetFlag(FLAGS_promote_after_reads));
  }
  if (Given("max_pin_ttl_ms")) c.set_max_pin_ttl_ms(absl::GetFlag(FLAGS_max_pin_ttl_ms));
  if (Given("max_pins")) c.set_max_pins(absl::GetFlag(FLAGS_max_pins));
  if (Given("verify_on_open")) c.set_verify_on_open(absl::GetFlag(FLAGS_verify_on_open));
  if (Given("prefault_ram")) c.set_prefault_ram(absl::GetFlag(FLAGS_prefault_ram));
  if (Given("shutdown_demote_ms")) {
    c.set_shutdown_demote_ms(absl::GetFlag(FLAGS_shutdown_demote_ms));
  }
  if (Given("max_inflight_bytes")) {
    c.set_max_inflight_bytes(absl::GetFlag(FLAGS_max_inflight_bytes));
  }
  if (Given("max_message_bytes")) {
    c.set_max_message_bytes(absl::GetFlag(FLAGS_max_message_bytes));
  }
  if (Given("log_level")) c.set_log_level(absl::GetFlag(FLAGS_log_level));
  if (Given("log_format")) c.set_log_format(absl::GetFlag(FLAGS_log_format));
  if (Given("ucx")) c.set_ucx(absl::GetFlag(FLAGS_ucx));
  if (Given("ucx_transfer_timeout_ms")) {
    c.set_ucx_transfer_timeout_ms(absl::GetFlag(FLAGS_ucx_transfer_timeout_ms));
  }
  if (Given("ucx_max_sessions")) c.set_ucx_max_sessions(absl::GetFlag(FLAGS_ucx_max_sessions));
  if (Given("ucx_transports")) c.set_ucx_transports(absl::GetFlag(FLAGS_ucx_transports));
  if (Given("ucx_mutex_locks")) c.set_ucx_mutex_locks(absl::GetFlag(FLAGS_ucx_mutex_locks));
  if (Given("tls_cert_file")) c.set_tls_cert_file(absl::GetFlag(FLAGS_tls_cert_file));
  if (Given("tls_key_file")) c.set_tls_key_file(absl::GetFlag(FLAGS_tls_key_file));
  if (Given("tls_client_ca_file")) {
    c.set_tls_client_ca_file(absl::GetFlag(FLAGS_tls_client_ca_file));
  }
  if (Given("allow_insecure")) c.set_allow_insecure(absl::GetFlag(FLAGS_allow_insecure));
  if (Given("enable_reflection")) {
    c.set_enable_reflection(absl::GetFlag(FLAGS_enable_reflection));
  }
  if (Given("access_file")) c.set_access_file(absl::GetFlag(FLAGS_access_file));
  if (Given("tenant_max_pins")) c.set_tenant_max_pins(absl::GetFlag(FLAGS_tenant_max_pins));
  if (Given("tenant_max_pinned_bytes")) {
    c.set_tenant_max_pinned_bytes(absl::GetFlag(FLAGS_tenant_max_pinned_bytes));
  }
  if (Given("tenant_max_ram_bytes")) {
    c.set_tenant_max_ram_bytes(absl::GetFlag(FLAGS_tenant_max_ram_bytes));
  }
  if (Given("tenant_max_disk_bytes")) {
    c.set_tenant_max_disk_bytes(absl::GetFlag(FLAGS_tenant_max_disk_bytes));
  }
  if (Given("trusted_local_clients")) {
    c.set_trusted_local_clients(absl::GetFlag(FLAGS_trusted_local_clients));
  }
  if (Given("local_lanes")) c.set_local_lanes(absl::GetFlag(FLAGS_local_lanes));
  if (Given("local_max_lanes")) c.set_local_max_lanes(absl::GetFlag(FLAGS_local_max_lanes));
  if (Given("local_max_lanes_per_tenant")) {
    c.set_local_max_lanes_per_tenant(absl::GetFlag(FLAGS_local_max_lanes_per_tenant));
  }
  if (Given("local_direct_transfers")) {
    c.set_local_direct_transfers(absl::GetFlag(FLAGS_local_direct_transfers));
  }
  if (Given("node_id")) c.set_node_id(absl::GetFlag(FLAGS_node_id));
  if (Given("advertise_address")) c.set_advertise_address(absl::GetFlag(FLAGS_advertise_address));
  if (Given("etcd_endpoints")) {
    for (const std::string& e : absl::GetFlag(FLAGS_etcd_endpoints)) c.add_etcd_endpoints(e);
  }
  if (Given("cluster_name")) c.set_cluster_name(absl::GetFlag(FLAGS_cluster_name));
  if (Given("lease_ttl_s")) c.set_lease_ttl_s(absl::GetFlag(FLAGS_lease_ttl_s));
  if (Given("static_members")) {
    for (const std::string& m : absl::GetFlag(FLAGS_static_members)) c.add_static_members(m);
  }
  if (Given("replicas")) c.set_replicas(absl::GetFlag(FLAGS_replicas));
  if (Given("peer_token_file")) c.set_peer_token_file(absl::GetFlag(FLAGS_peer_token_file));
  if (Given("peer_tls_ca_file")) c.set_peer_tls_ca_file(absl::GetFlag(FLAGS_peer_tls_ca_file));
  if (Given("drain_timeout_s")) c.set_drain_timeout_s(absl::GetFlag(FLAGS_drain_timeout_s));
  if (Given("metrics_listen")) c.set_metrics_listen(absl::GetFlag(FLAGS_metrics_listen));
  if (Given("rebalance_bytes_per_s")) {
    c.set_rebalance_bytes_per_s(absl::GetFlag(FLAGS_rebalance_bytes_per_s));
  }
  if (Given("event_log_capacity")) {
    c.set_event_log_capacity(absl::GetFlag(FLAGS_event_log_capacity));
  }
  if (Given("max_event_watchers")) {
    c.set_max_event_watchers(absl::GetFlag(FLAGS_max_event_watchers));
  }
  if (Given("max_event_watchers_per_tenant")) {
    c.set_max_event_watchers_per_tenant(absl::GetFlag(FLAGS_max_event_watchers_per_tenant));
  }
  return c;
}

}  // namespace

void RecordGivenFlags(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (!absl::ConsumePrefix(&arg, "--")) {
      if (!absl::ConsumePrefix(&arg, "-")) continue;
    }
    arg = arg.substr(0, arg.find('='));
    GivenFlags().insert(std::string(arg));
    if (absl::ConsumePrefix(&arg, "no")) GivenFlags().insert(std::string(arg));
  }
}

absl::StatusOr<ServerSettings> LoadSettings() {
  v1::ServerConfig config;
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    ASSIGN_OR_RETURN(config, LoadServerConfigFile(path));
  }
  config.MergeFrom(OverridesFromFlags());
  return ResolveServerConfig(config);
}

}  // namespace kvtier::store
