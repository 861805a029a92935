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

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/pem_file.h"
#include "common/status_macros.h"
#include "common/tool_usage.h"
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
#include "kvstore/service/server_flags.h"
#include "kvstore/service/service.h"
#include "kvstore/service/tenants.h"

namespace kvtier::store {
namespace {

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
  options.direct_transfers = settings.local_direct_transfers;
  if (absl::Status started = service->StartLocalLanes(options); !started.ok()) {
    KVTIER_LOG(WARNING) << "local lanes not started, same-host clients use the other paths: "
                        << started;
    return;
  }
  KVTIER_LOG(INFO) << "local lanes on max_lanes=" << options.max_lanes
                   << " max_lanes_per_tenant=" << options.max_lanes_per_tenant
                   << " direct_transfers=" << options.direct_transfers;
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
      ServerMetrics::Start(settings->metrics_listen, access.get());
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
    // Open lanes, data-plane sessions and event streams act for credentials
    // of the old table: their clients open new ones, authenticated against
    // the new one (UCX endpoints a revoked client keeps reach nothing: no
    // session, and tagged messages no transfer wants are dropped).
    service->CloseGrantedChannels();
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
  kvtier::SetToolUsage("kvtier store server (see proto/kvtier/v1/config.proto)");
  kvtier::store::RecordGivenFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);
  return kvtier::store::Run();
}
