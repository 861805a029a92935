// Configuration of kvtier-server: a v1::ServerConfig read from a file in
// protobuf text format, overridden by command-line flags (merged with
// proto MergeFrom: a field set in the override wins), then resolved to
// defaults and validated into ServerSettings.
//
//   ASSIGN_OR_RETURN(v1::ServerConfig config, LoadServerConfigFile(path));
//   config.MergeFrom(overrides_from_flags);
//   ASSIGN_OR_RETURN(ServerSettings settings, ResolveServerConfig(config));
//
// Thread-safety: pure functions, thread-safe.
#ifndef KVTIER_KVSTORE_SERVICE_SERVER_CONFIG_H_
#define KVTIER_KVSTORE_SERVICE_SERVER_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/log.h"
#include "kvstore/core/store.h"
#include "kvtier/v1/config.pb.h"
#include "kvtier/v1/store.pb.h"
#include "ucx/context.h"

namespace kvtier::store {

// Bounds of ServerConfig.max_message_bytes: a 4 MiB page must fit, and gRPC
// sizes are ints.
inline constexpr uint64_t kMinMessageBytes = uint64_t{4} << 20;
inline constexpr uint64_t kMaxMessageBytes = (uint64_t{2} << 30) - 1;

// A fully resolved, validated server configuration.
struct ServerSettings {
  std::string listen = "127.0.0.1:50051";
  StoreOptions store;  // data_dir, tiers, limits
  uint64_t max_message_bytes = uint64_t{256} << 20;
  uint64_t max_inflight_bytes = uint64_t{1} << 30;
  uint64_t shutdown_demote_ms = 0;
  LogLevel log_level = LogLevel::kInfo;
  LogFormat log_format = LogFormat::kText;
  // The UCX data plane (kvstore/dataplane/ucx_data_plane.h); see config.proto.
  bool ucx = true;
  uint64_t ucx_transfer_timeout_ms = 60'000;
  uint32_t ucx_max_sessions = 1024;
  ucx::UcxOptions ucx_options;  // ucx_transports, ucx_mutex_locks
  // TLS (config.proto); all empty: plaintext.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  bool allow_insecure = false;
  bool enable_reflection = false;
  std::string access_file;  // empty: no access control
  bool trusted_local_clients = false;
  // Local lanes (config.proto).
  bool local_lanes = true;
  uint32_t local_max_lanes = 64;
  uint32_t local_max_lanes_per_tenant = 16;
  bool local_direct_transfers = true;
  // Cluster (config.proto).
  std::string node_id = "local";
  std::string advertise_address;  // empty: the listen address, bound port
  std::vector<std::string> etcd_endpoints;
  std::string cluster_name = "default";
  uint32_t lease_ttl_s = 10;
  // From static_members, state MEMBER_UP, sorted by id.
  std::vector<v1::Member> static_members;
  uint32_t replicas = 2;
  std::string peer_token_file;
  std::string peer_tls_ca_file;
  uint32_t drain_timeout_s = 30;
  uint64_t rebalance_bytes_per_s = uint64_t{128} << 20;
  std::string metrics_listen;  // empty: no /metrics endpoint
  // Cache events (config.proto); event_log_capacity 0: none.
  uint32_t event_log_capacity = 1 << 18;
  uint32_t max_event_watchers = 64;
  uint32_t max_event_watchers_per_tenant = 8;

  bool tls() const { return !tls_cert_file.empty(); }
  bool clustered() const { return !etcd_endpoints.empty() || !static_members.empty(); }
};

// Whether the host of a host:port address is loopback: "localhost",
// 127.0.0.0/8 in dotted decimal, or [::1].
bool IsLoopbackAddress(absl::string_view listen);

// Parses text-format `text`; `source` names it in errors. INVALID_ARGUMENT
// with "source:line:column: message" on a syntax error or unknown field.
absl::StatusOr<v1::ServerConfig> ParseServerConfigText(absl::string_view text,
                                                       absl::string_view source);

// Reads and parses `path`. NOT_FOUND when it cannot be read.
absl::StatusOr<v1::ServerConfig> LoadServerConfigFile(const std::string& path);

// Applies the defaults documented in config.proto and validates every field:
// INVALID_ARGUMENT naming the first bad field and its value.
absl::StatusOr<ServerSettings> ResolveServerConfig(const v1::ServerConfig& config);

// "debug", "info", "warning", "error" (case-sensitive).
absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name);

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_SERVER_CONFIG_H_
