// kvtier-server: the store behind its gRPC service.
//
//   kvtier-server [--config FILE] [--listen HOST:PORT] [--data_dir DIR] ...
//
// Flags given on the command line override the config file; unset fields
// take the defaults documented in proto/kvtier/v1/config.proto. SIGINT and
// SIGTERM shut the server down gracefully: in-flight calls finish, then the
// store closes. SIGHUP reloads the access file.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/pem_file.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "kvstore/cluster/membership.h"
#include "kvstore/cluster/replicator.h"
#include "kvstore/core/cache_events.h"
#include "kvstore/core/store.h"
#include "kvstore/metrics/server_metrics.h"
#include "kvstore/service/server_cluster.h"
#include "kvstore/service/server_config.h"
#include "kvstore/service/service.h"
#include "kvstore/service/tenants.h"

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
ABSL_FLAG(uint32_t, tenant_max_pins, 0, "Most live pins of one tenant; 0: no quota");
ABSL_FLAG(uint64_t, tenant_max_pinned_bytes, 0,
          "Most bytes of one tenant's pinned pages; 0: no quota");
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

absl::StatusOr<ServerSettings> LoadSettings() {
  v1::ServerConfig config;
  if (const std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    ASSIGN_OR_RETURN(config, LoadServerConfigFile(path));
  }
  config.MergeFrom(OverridesFromFlags());
  return ResolveServerConfig(config);
}

// Written to a temporary name first, so a reader never sees a partial port.
absl::Status WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::InternalError(absl::StrCat("cannot rename ", tmp, " to ", path));
  }
  return absl::OkStatus();
}

void LogTier(const char* name, const TierOptions& t, const TierStats& s) {
  KVTIER_LOG(INFO) << "tier name=" << name << " capacity_bytes=" << t.capacity_bytes
                   << " high_watermark=" << t.high_watermark
                   << " low_watermark=" << t.low_watermark << " policy=" << t.policy
                   << " pages=" << s.pages << " used_bytes=" << s.used_bytes;
}

// Every RPC allocates message buffers the size of its pages (up to 64 MiB).
// By default glibc serves such blocks with a fresh mmap and returns them
// with munmap, so each message pays page faults on every 4 KiB it touches;
// keeping them on the heap more than doubles put throughput for 1 MiB+
// pages. What the heap keeps for reuse is bounded by the in-flight budget:
// at most kArenas malloc arenas (gRPC's many threads would otherwise each
// get one), each trimmed once it holds more than an eighth of the budget
// free at its top; under overload the arenas held 4-8x the budget without
// these bounds.
void KeepPageBuffersOnTheHeap(uint64_t max_inflight_bytes) {
  constexpr int kMmapThresholdBytes = 96 << 20;
  constexpr int kArenas = 4;
  const int trim_bytes = static_cast<int>(
      std::clamp<uint64_t>(max_inflight_bytes / 8, uint64_t{16} << 20, uint64_t{512} << 20));
  if (mallopt(M_MMAP_THRESHOLD, kMmapThresholdBytes) != 1 ||
      mallopt(M_TRIM_THRESHOLD, trim_bytes) != 1 || mallopt(M_ARENA_MAX, kArenas) != 1) {
    KVTIER_LOG(WARNING) << "mallopt failed; large messages will be slower";
  }
}

// TLS credentials from the configured PEM files (checked here, so that a
// bad file is a clear error), or plaintext.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentials(
    const ServerSettings& settings) {
  if (!settings.tls()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions ssl;
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  ASSIGN_OR_RETURN(pair.cert_chain, ReadPemFile(settings.tls_cert_file, "tls_cert_file"));
  ASSIGN_OR_RETURN(pair.private_key, ReadPemFile(settings.tls_key_file, "tls_key_file"));
  ssl.pem_key_cert_pairs.push_back(std::move(pair));
  if (!settings.tls_client_ca_file.empty()) {
    ASSIGN_OR_RETURN(ssl.pem_root_certs,
                     ReadPemFile(settings.tls_client_ca_file, "tls_client_ca_file"));
    ssl.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(ssl);
}

// Null (and *port 0) when the address cannot be bound, or the TLS
// certificate and key do not load.
std::unique_ptr<grpc::Server> BuildServer(const ServerSettings& settings,
                                          std::shared_ptr<grpc::ServerCredentials> credentials,
                                          KvStoreService* service, ServerMetrics* metrics,
                                          int* port) {
  grpc::EnableDefaultHealthCheckService(true);
  if (settings.enable_reflection) grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(settings.listen, std::move(credentials), port);
  // Without this, a second server could bind the same port via SO_REUSEPORT
  // and silently share its traffic.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Half the in-flight budget for gRPC's buffers of requests still arriving
  // and replies being sent (past it gRPC refuses new connections and closes
  // some); the service's own accounting takes the other half.
  grpc::ResourceQuota quota("kvtier-server");
  quota.Resize(settings.max_inflight_bytes / 2);
  builder.SetResourceQuota(quota);
  builder.SetMaxReceiveMessageSize(static_cast<int>(settings.max_message_bytes));
  builder.SetMaxSendMessageSize(static_cast<int>(settings.max_message_bytes));
  builder.RegisterService(service);
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(metrics->RpcInterceptorFactory());
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  return builder.BuildAndStart();
}

void LogStartup(const ServerSettings& settings, int port, const StoreStats& recovered) {
  KVTIER_LOG(INFO) << "kvtier-server listening listen=" << settings.listen << " port=" << port
                   << " tls=" << (settings.tls() ? (settings.tls_client_ca_file.empty()
                                                        ? "on"
                                                        : "on, client certificates required")
                                                 : "off (plaintext)")
                   << " access=" << (settings.access_file.empty()
                                         ? std::string("none (one anonymous tenant)")
                                         : settings.access_file)
                   << " data_dir=" << settings.store.data_dir
                   << " max_batch_pages=" << settings.store.max_batch_pages
                   << " max_lookup_pages=" << settings.store.max_lookup_pages
                   << " max_message_bytes=" << settings.max_message_bytes
                   << " max_inflight_bytes=" << settings.max_inflight_bytes;
  LogTier("ram", settings.store.ram, recovered.ram);
  LogTier("disk", settings.store.disk, recovered.disk);
  KVTIER_LOG(INFO) << "recovered pages=" << recovered.ram.pages + recovered.disk.pages
                   << " lost_pages=" << recovered.lost_pages
                   << " verifying_in_background=" << recovered.unverified_disk_pages;
}

// Local lanes for same-host clients unless they are trusted with the arena
// (which serves them better); the server runs on without them if the socket
// cannot be made.
void StartLocalLanes(const ServerSettings& settings, KvStoreService* service) {
  if (!settings.local_lanes || settings.trusted_local_clients) {
    KVTIER_LOG(INFO) << "local lanes off"
                     << (settings.trusted_local_clients ? " (trusted_local_clients)" : "");
    return;
  }
  LocalLaneOptions options;
  options.max_lanes = settings.local_max_lanes;
  options.max_lanes_per_tenant = settings.local_max_lanes_per_tenant;
  if (absl::Status started = service->StartLocalLanes(options); !started.ok()) {
    KVTIER_LOG(WARNING) << "local lanes not started, same-host clients use the other paths: "
                        << started;
    return;
  }
  KVTIER_LOG(INFO) << "local lanes on max_lanes=" << options.max_lanes
                   << " max_lanes_per_tenant=" << options.max_lanes_per_tenant;
}

// With the data plane on and clients trusted with the arena, the RAM arena
// is allocated through UCX so that shared-memory clients reach it
// one-sidedly. Null (the store maps private memory, which no other process
// can attach) otherwise, or when UCX cannot start.
std::shared_ptr<UcxArenaMemory> PrepareUcxArena(ServerSettings* settings) {
  if (!settings->ucx || !settings->trusted_local_clients) return nullptr;
  absl::StatusOr<std::shared_ptr<UcxArenaMemory>> arena =
      UcxArenaMemory::Create(settings->ucx_options);
  if (!arena.ok()) {
    KVTIER_LOG(WARNING) << "UCX cannot start: " << arena.status();
    return nullptr;
  }
  settings->store.ram_memory = (*arena)->Provider();
  return *std::move(arena);
}

// Null when disabled or when UCX cannot start: bytes then travel inline.
std::unique_ptr<UcxDataPlane> StartDataPlane(const ServerSettings& settings, Store* store,
                                             const std::shared_ptr<UcxArenaMemory>& ucx_arena) {
  if (!settings.ucx) {
    KVTIER_LOG(INFO) << "data plane disabled; page bytes travel inline";
    return nullptr;
  }
  DataPlaneOptions options;
  options.transfer_timeout_ms = settings.ucx_transfer_timeout_ms;
  options.max_sessions = settings.ucx_max_sessions;
  options.ucx = settings.ucx_options;
  options.expose_arena = settings.trusted_local_clients;
  absl::StatusOr<std::unique_ptr<UcxDataPlane>> plane =
      UcxDataPlane::Create(store, options, ucx_arena);
  if (!plane.ok()) {
    KVTIER_LOG(WARNING) << "UCX data plane unavailable, page bytes travel inline: "
                        << plane.status();
    return nullptr;
  }
  KVTIER_LOG(INFO) << "UCX data plane ready arena_bytes=" << store->RamRegion().size()
                   << " arena_allocated_by_ucx="
                   << (ucx_arena != nullptr && ucx_arena->memory() != nullptr)
                   << " trusted_local_clients=" << options.expose_arena
                   << " transfer_timeout_ms=" << options.transfer_timeout_ms
                   << " max_sessions=" << options.max_sessions;
  return std::move(*plane);
}

int Run() {
  // Block the shutdown signals before gRPC starts threads, so that only
  // sigwait below receives them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  absl::StatusOr<ServerSettings> settings = LoadSettings();
  if (!settings.ok()) {
    std::fprintf(stderr, "kvtier-server: invalid configuration: %s\n",
                 std::string(settings.status().message()).c_str());
    return 2;
  }
  SetMinLogLevel(settings->log_level);
  SetLogFormat(settings->log_format);
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials =
      ServerCredentials(*settings);
  if (!credentials.ok()) {
    std::fprintf(stderr, "kvtier-server: %s\n",
                 std::string(credentials.status().message()).c_str());
    return 2;
  }
  std::unique_ptr<access::AccessControl> access;
  if (!settings->access_file.empty()) {
    absl::StatusOr<std::unique_ptr<access::AccessControl>> opened =
        access::AccessControl::Open(settings->access_file);
    if (!opened.ok()) {
      std::fprintf(stderr, "kvtier-server: access_file: %s\n",
                   std::string(opened.status().message()).c_str());
      return 2;
    }
    access = *std::move(opened);
  }
  KeepPageBuffersOnTheHeap(settings->max_inflight_bytes);
  const std::shared_ptr<UcxArenaMemory> ucx_arena = PrepareUcxArena(&*settings);
  // Outlives the store, which appends to it.
  std::unique_ptr<CacheEventLog> events;
  if (settings->event_log_capacity > 0) {
    events = std::make_unique<CacheEventLog>(settings->event_log_capacity);
    settings->store.events = events.get();
  }
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(settings->store);
  if (!store.ok()) {
    std::fprintf(stderr, "kvtier-server: cannot open store in %s: %s\n",
                 settings->store.data_dir.c_str(), store.status().ToString().c_str());
    return 1;
  }
  if (access != nullptr) ApplyTenantQuotas(*access->Current(), settings->store, store->get());
  const StoreStats recovered = (*store)->Stats();
  std::unique_ptr<UcxDataPlane> data_plane = StartDataPlane(*settings, store->get(), ucx_arena);
  ServiceLimits limits = ServiceLimits::FromStoreOptions(settings->store);
  limits.max_inflight_bytes = settings->max_inflight_bytes / 2;  // gRPC's quota has the rest
  auto service =
      std::make_unique<KvStoreService>(store->get(), limits, data_plane.get(), access.get());
  StartLocalLanes(*settings, service.get());
  if (events != nullptr) {
    service->StartCacheEvents(
        events.get(), CacheEventFeedOptions{
                          .node_id = settings->node_id,
                          .max_watchers = settings->max_event_watchers,
                          .max_watchers_per_tenant = settings->max_event_watchers_per_tenant,
                          .interval = absl::Milliseconds(10),
                          .heartbeat = absl::Seconds(5)});
  }

  absl::StatusOr<std::unique_ptr<ServerMetrics>> metrics =
      ServerMetrics::Start(settings->metrics_listen);
  if (!metrics.ok()) {
    std::fprintf(stderr, "kvtier-server: %s\n", metrics.status().ToString().c_str());
    return 1;
  }
  (*metrics)->SetStore(store->get(), service.get(), access.get());

  int port = 0;
  std::unique_ptr<grpc::Server> server =
      BuildServer(*settings, *std::move(credentials), service.get(), metrics->get(), &port);
  if (server == nullptr || port == 0) {
    std::fprintf(stderr,
                 "kvtier-server: cannot listen on %s: address in use or not available%s\n",
                 settings->listen.c_str(),
                 settings->tls() ? ", or the TLS certificate and key do not load or match" : "");
    return 1;
  }
  if (const std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    if (absl::Status s = WritePortFile(path, port); !s.ok()) {
      std::fprintf(stderr, "kvtier-server: %s\n", s.ToString().c_str());
      server->Shutdown();
      return 1;
    }
  }
  LogStartup(*settings, port, recovered);
  if ((*metrics)->port() != 0) {
    KVTIER_LOG(INFO) << "metrics at http://"
                     << settings->metrics_listen.substr(0, settings->metrics_listen.rfind(':'))
                     << ":" << (*metrics)->port() << "/metrics";
  }
  absl::StatusOr<std::unique_ptr<cluster::Membership>> membership =
      JoinCluster(*settings, port, recovered);
  if (!membership.ok()) {
    std::fprintf(stderr, "kvtier-server: cannot join the cluster: %s\n",
                 membership.status().ToString().c_str());
    server->Shutdown();
    return 1;
  }
  service->SetMembership(membership->get());
  std::unique_ptr<cluster::Replicator> replicator =
      StartReplicator(*settings, store->get(), membership->get());
  (*metrics)->SetCluster(membership->get(), replicator.get());
  if (settings->clustered()) {
    service->SetDrainHandler([m = membership->get(), r = replicator.get()](
                                 absl::Duration wait, v1::DrainResponse* response) {
      return DrainNode(m, r, wait, response);
    });
  }

  int sig = 0;
  while (sigwait(&signals, &sig) == 0 && sig == SIGHUP) {
    if (access == nullptr) {
      KVTIER_LOG(INFO) << "SIGHUP: no access_file to reload";
      continue;
    }
    if (absl::Status reloaded = access->Reload(); !reloaded.ok()) {
      KVTIER_LOG(ERROR) << "SIGHUP: access file not reloaded, the previous one stays: "
                        << reloaded;
      continue;
    }
    const std::shared_ptr<const access::AccessTable> table = access->Current();
    ApplyTenantQuotas(*table, settings->store, store->get());
    // Open lanes act for credentials of the old table: their clients open
    // new ones, authenticated against the new one.
    service->CloseLocalLanes();
    KVTIER_LOG(INFO) << "SIGHUP: access file reloaded tokens=" << table->token_count()
                     << " certificates=" << table->certificate_count()
                     << " tenants_with_own_quotas=" << table->quota_overrides().size();
  }
  KVTIER_LOG(INFO) << "shutting down signal=" << sig;
  // Its record goes when the server has stopped serving.
  DrainOnShutdown(*settings, membership->get(), replicator.get());
  server->GetHealthCheckService()->SetServingStatus(false);
  // Event streams never end by themselves: end them before the server
  // waits for its calls.
  service->StopCacheEvents();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(10));
  server->Wait();
  KVTIER_LOG(INFO) << "rpc server stopped; closing the data plane and the store";
  // The service first: it serves the data plane's request messages.
  server.reset();
  // Scrapes read the service, the membership and the replicator.
  metrics->reset();
  service.reset();
  (*membership)->SetListener(nullptr);
  (*membership)->Leave();
  replicator.reset();
  data_plane.reset();
  if (settings->shutdown_demote_ms > 0) {
    // No request and no data-plane writer is left: RAM is quiet.
    const absl::Time start = absl::Now();
    absl::StatusOr<uint64_t> demoted = (*store)->DemoteAll(
        start + absl::Milliseconds(static_cast<int64_t>(settings->shutdown_demote_ms)));
    const StoreStats left = (*store)->Stats();
    KVTIER_LOG(INFO) << "shutdown demotion pages_written=" << demoted.value_or(0)
                     << " status=" << demoted.status() << " seconds="
                     << absl::ToDoubleSeconds(absl::Now() - start)
                     << " ram_pages=" << left.ram.pages << " disk_pages=" << left.disk.pages;
  }
  store->reset();
  KVTIER_LOG(INFO) << "stopped";
  return 0;
}

}  // namespace
}  // namespace kvtier::store

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage("kvtier store server (see proto/kvtier/v1/config.proto)");
  kvtier::store::RecordGivenFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  return kvtier::store::Run();
}
