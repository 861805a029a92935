#include "kvstore/service/server_config.h"

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/small_file.h"
#include "common/status_macros.h"
#include "google/protobuf/io/tokenizer.h"
#include "google/protobuf/text_format.h"

namespace kvtier::store {
namespace {

// Collects parser errors as "source:line:column: message" (1-based).
class ErrorCollector : public google::protobuf::io::ErrorCollector {
 public:
  explicit ErrorCollector(absl::string_view source) : source_(source) {}
  void AddError(int line, google::protobuf::io::ColumnNumber column,
                const std::string& message) override {
    errors_.push_back(absl::StrFormat("%s:%d:%d: %s", source_, line + 1, column + 1, message));
  }
  void AddWarning(int line, google::protobuf::io::ColumnNumber column,
                  const std::string& message) override {
    AddError(line, column, message);
  }
  std::string Joined() const { return absl::StrJoin(errors_, "; "); }

 private:
  std::string source_;
  std::vector<std::string> errors_;
};

// host:port with a host (a name, an IPv4 address or a bracketed IPv6 one)
// of at most 255 bytes without spaces or '/', and a decimal port in
// [min_port, 65535].
bool IsHostPort(absl::string_view address, uint32_t min_port) {
  const size_t colon = address.rfind(':');
  uint32_t port = 0;
  return colon != absl::string_view::npos && colon > 0 && colon + 1 < address.size() &&
         address.size() <= 255 && address.size() - colon - 1 <= 5 &&
         address.find_first_not_of("0123456789", colon + 1) == absl::string_view::npos &&
         absl::SimpleAtoi(address.substr(colon + 1), &port) && port >= min_port &&
         port <= 65535 && address.find_first_of(" \t\n\r/") == absl::string_view::npos;
}

absl::Status CheckListenAddress(const std::string& listen) {
  if (!IsHostPort(listen, 0)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("listen \"%s\" is not host:port (port 0-65535)", listen));
  }
  return absl::OkStatus();
}

}  // namespace

bool IsLoopbackAddress(absl::string_view listen) {
  const size_t colon = listen.rfind(':');
  if (colon == absl::string_view::npos) return false;
  const absl::string_view host = listen.substr(0, colon);
  if (host == "localhost" || host == "[::1]") return true;
  // 127.a.b.c with every part a decimal byte.
  std::vector<absl::string_view> parts = absl::StrSplit(host, '.');
  if (parts.size() != 4 || parts[0] != "127") return false;
  for (absl::string_view part : parts) {
    uint32_t value = 0;
    if (part.empty() || part.size() > 3 || !absl::SimpleAtoi(part, &value) || value > 255 ||
        part.find_first_not_of("0123456789") != absl::string_view::npos) {
      return false;
    }
  }
  return true;
}

namespace {

// With an access file, a tenant without pin quotas of its own holds at most
// this share of the server's pins and of its smaller tier in pinned bytes.
constexpr uint32_t kDefaultTenantShare = 4;

absl::Status ResolveTls(const v1::ServerConfig& config, ServerSettings* s) {
  s->tls_cert_file = config.tls_cert_file();
  s->tls_key_file = config.tls_key_file();
  s->tls_client_ca_file = config.tls_client_ca_file();
  s->allow_insecure = config.allow_insecure();
  s->enable_reflection = config.enable_reflection();
  s->access_file = config.access_file();
  s->trusted_local_clients = config.trusted_local_clients();
  s->ucx_options.shared_memory = s->trusted_local_clients;
  if (s->tls_cert_file.empty() != s->tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls_cert_file and tls_key_file go together");
  }
  if (!s->tls_client_ca_file.empty() && !s->tls()) {
    return absl::InvalidArgumentError(
        "tls_client_ca_file (mTLS) needs tls_cert_file and tls_key_file");
  }
  if (!s->tls() && !s->allow_insecure && !IsLoopbackAddress(s->listen)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "listen \"%s\" is not a loopback address and TLS is off: anyone who reaches it could "
        "read and write every page; set tls_cert_file and tls_key_file, or allow_insecure",
        s->listen));
  }
  if (s->access_file.empty() && !s->allow_insecure && !IsLoopbackAddress(s->listen)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "listen \"%s\" is not a loopback address and there is no access_file: every caller "
        "would be an admin of one shared tenant; set access_file, or allow_insecure",
        s->listen));
  }
  if (s->tls() && s->ucx) {
    if (config.has_ucx() && config.ucx() && !s->allow_insecure) {
      return absl::InvalidArgumentError(
          "ucx with TLS: the UCX data plane does not encrypt page bytes; leave ucx unset (page "
          "bytes then travel inside TLS) or set allow_insecure");
    }
    if (!(config.has_ucx() && config.ucx())) s->ucx = false;
  }
  return absl::OkStatus();
}

absl::Status ResolveTier(const v1::TierConfig& in, absl::string_view name,
                         uint64_t default_capacity, TierOptions* out) {
  out->capacity_bytes = in.has_capacity_bytes() ? in.capacity_bytes() : default_capacity;
  if (in.has_high_watermark()) out->high_watermark = in.high_watermark();
  if (in.has_low_watermark()) out->low_watermark = in.low_watermark();
  if (in.has_policy()) out->policy = in.policy();
  if (out->capacity_bytes == 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ".capacity_bytes must be > 0"));
  }
  // Written so that NaN fails too.
  if (!(out->high_watermark > 0 && out->high_watermark <= 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.high_watermark %g out of range (0, 1]", name, out->high_watermark));
  }
  if (!(out->low_watermark > 0 && out->low_watermark <= out->high_watermark)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s.low_watermark %g out of range (0, high_watermark %g]", name,
                        out->low_watermark, out->high_watermark));
  }
  if (out->policy != "lru" && out->policy != "s3fifo") {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s.policy \"%s\" unknown; expected \"lru\" or \"s3fifo\"", name, out->policy));
  }
  return absl::OkStatus();
}

absl::Status CheckRange(absl::string_view name, uint64_t value, uint64_t lo, uint64_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s %d out of range [%d, %d]", name, value, lo, hi));
  }
  return absl::OkStatus();
}

// A cluster name or node id: 1..64 of [A-Za-z0-9._-].
bool IsMemberName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') {
      return false;
    }
  }
  return true;
}

absl::Status ResolveCluster(const v1::ServerConfig& config, ServerSettings* s) {
  if (config.has_node_id()) s->node_id = config.node_id();
  if (!IsMemberName(s->node_id)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "node_id \"%s\": must be 1..64 of [A-Za-z0-9._-]", absl::CEscape(s->node_id)));
  }
  if (config.has_cluster_name()) s->cluster_name = config.cluster_name();
  if (!IsMemberName(s->cluster_name)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "cluster_name \"%s\": must be 1..64 of [A-Za-z0-9._-]", absl::CEscape(s->cluster_name)));
  }
  if (config.has_lease_ttl_s()) s->lease_ttl_s = config.lease_ttl_s();
  RETURN_IF_ERROR(CheckRange("lease_ttl_s", s->lease_ttl_s, 2, 300));
  s->advertise_address = config.advertise_address();
  if (!s->advertise_address.empty() && !IsHostPort(s->advertise_address, 1)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "advertise_address \"%s\": must be host:port", absl::CEscape(s->advertise_address)));
  }
  for (const std::string& endpoint : config.etcd_endpoints()) {
    if (!IsHostPort(endpoint, 1)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "etcd_endpoints \"%s\": must be host:port", absl::CEscape(endpoint)));
    }
    s->etcd_endpoints.push_back(endpoint);
  }
  for (const std::string& entry : config.static_members()) {
    const size_t eq = entry.find('=');
    v1::Member member;
    member.set_state(v1::MEMBER_UP);
    if (eq != std::string::npos) {
      member.set_id(entry.substr(0, eq));
      member.set_address(entry.substr(eq + 1));
    }
    if (eq == std::string::npos || !IsMemberName(member.id()) ||
        !IsHostPort(member.address(), 1)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "static_members \"%s\": must be id=host:port with an id of 1..64 of [A-Za-z0-9._-]",
          absl::CEscape(entry)));
    }
    s->static_members.push_back(std::move(member));
  }
  std::sort(s->static_members.begin(), s->static_members.end(),
            [](const v1::Member& a, const v1::Member& b) { return a.id() < b.id(); });
  for (size_t i = 1; i < s->static_members.size(); ++i) {
    if (s->static_members[i].id() == s->static_members[i - 1].id()) {
      return absl::InvalidArgumentError(
          absl::StrCat("static_members: id \"", s->static_members[i].id(), "\" given twice"));
    }
  }
  if (!s->etcd_endpoints.empty() && !s->static_members.empty()) {
    return absl::InvalidArgumentError("etcd_endpoints and static_members exclude each other");
  }
  if (config.has_replicas()) s->replicas = config.replicas();
  RETURN_IF_ERROR(CheckRange("replicas", s->replicas, 1, 16));
  if (config.has_drain_timeout_s()) s->drain_timeout_s = config.drain_timeout_s();
  RETURN_IF_ERROR(CheckRange("drain_timeout_s", s->drain_timeout_s, 0, 3600));
  if (config.has_rebalance_bytes_per_s()) s->rebalance_bytes_per_s = config.rebalance_bytes_per_s();
  RETURN_IF_ERROR(
      CheckRange("rebalance_bytes_per_s", s->rebalance_bytes_per_s, 0, uint64_t{1} << 40));
  s->peer_token_file = config.peer_token_file();
  s->peer_tls_ca_file = config.peer_tls_ca_file();
  if (!s->clustered()) return absl::OkStatus();
  if (s->tls() && s->peer_tls_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "peer_tls_ca_file: required in a cluster with TLS, to verify the peers this node "
        "copies pages to");
  }
  if (!s->access_file.empty() && s->peer_token_file.empty() && s->tls_client_ca_file.empty()) {
    return absl::InvalidArgumentError(
        "peer_token_file: required in a cluster with an access_file and without client "
        "certificates: peers take copies from admins only");
  }
  if (!config.has_node_id()) {
    return absl::InvalidArgumentError("node_id: required with etcd_endpoints or static_members");
  }
  if (!s->static_members.empty() &&
      std::none_of(s->static_members.begin(), s->static_members.end(),
                   [&](const v1::Member& m) { return m.id() == s->node_id; })) {
    return absl::InvalidArgumentError(
        absl::StrCat("static_members: this node (node_id \"", s->node_id, "\") is not listed"));
  }
  const absl::string_view host = absl::string_view(s->listen).substr(0, s->listen.rfind(':'));
  if (s->advertise_address.empty() && (host == "0.0.0.0" || host == "[::]" || host.empty())) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "advertise_address: required in a cluster when listen \"%s\" is a wildcard address",
        s->listen));
  }
  return absl::OkStatus();
}


}  // namespace

absl::StatusOr<LogLevel> ParseLogLevel(absl::string_view name) {
  if (name == "debug") return LogLevel::kDebug;
  if (name == "info") return LogLevel::kInfo;
  if (name == "warning") return LogLevel::kWarning;
  if (name == "error") return LogLevel::kError;
  return absl::InvalidArgumentError(absl::StrFormat(
      "log_level \"%s\" unknown; expected debug, info, warning or error", name));
}

absl::StatusOr<v1::ServerConfig> ParseServerConfigText(absl::string_view text,
                                                       absl::string_view source) {
  v1::ServerConfig config;
  ErrorCollector errors(source);
  google::protobuf::TextFormat::Parser parser;
  parser.RecordErrorsTo(&errors);
  if (!parser.ParseFromString(std::string(text), &config)) {
    return absl::InvalidArgumentError(
        absl::StrCat("malformed config: ", errors.Joined()));
  }
  return config;
}

absl::StatusOr<v1::ServerConfig> LoadServerConfigFile(const std::string& path) {
  constexpr size_t kMaxConfigBytes = size_t{1} << 20;
  ASSIGN_OR_RETURN(const std::string text, ReadSmallFile(path, kMaxConfigBytes, "config file"));
  return ParseServerConfigText(text, path);
}

absl::StatusOr<ServerSettings> ResolveServerConfig(const v1::ServerConfig& config) {
  ServerSettings s;
  if (config.has_listen()) s.listen = config.listen();
  RETURN_IF_ERROR(CheckListenAddress(s.listen));
  StoreOptions& o = s.store;
  o.data_dir = config.has_data_dir() ? config.data_dir() : "./kvtier-data";
  if (o.data_dir.empty()) return absl::InvalidArgumentError("data_dir must not be empty");
  RETURN_IF_ERROR(ResolveTier(config.ram(), "ram", uint64_t{1} << 30, &o.ram));
  RETURN_IF_ERROR(ResolveTier(config.disk(), "disk", uint64_t{8} << 30, &o.disk));
  if (config.has_max_batch_pages()) o.max_batch_pages = config.max_batch_pages();
  RETURN_IF_ERROR(CheckRange("max_batch_pages", o.max_batch_pages, 1, 1 << 20));
  if (config.has_max_lookup_pages()) o.max_lookup_pages = config.max_lookup_pages();
  RETURN_IF_ERROR(CheckRange("max_lookup_pages", o.max_lookup_pages, 1, 1 << 24));
  if (config.has_max_lookup_entries()) o.max_lookup_entries = config.max_lookup_entries();
  RETURN_IF_ERROR(CheckRange("max_lookup_entries", o.max_lookup_entries, 1, uint32_t{1} << 26));
  if (config.has_promote_after_reads()) o.promote_after_reads = config.promote_after_reads();
  RETURN_IF_ERROR(CheckRange("promote_after_reads", o.promote_after_reads, 1, UINT32_MAX));
  if (config.has_max_pin_ttl_ms()) o.max_pin_ttl_ms = config.max_pin_ttl_ms();
  RETURN_IF_ERROR(CheckRange("max_pin_ttl_ms", o.max_pin_ttl_ms, 1, UINT64_MAX));
  if (config.has_max_pins()) o.max_pins = config.max_pins();
  RETURN_IF_ERROR(CheckRange("max_pins", o.max_pins, 1, UINT32_MAX));
  o.tenant_max_pins = config.tenant_max_pins();
  o.tenant_max_pinned_bytes = config.tenant_max_pinned_bytes();
  if (config.has_access_file() && !config.access_file().empty()) {
    // Tenants share the server: pinned pages stay in their tiers and pins
    // fill one table, so unbounded, one tenant could pin what every other
    // tenant's puts and pins need. Unset, each holds at most a quarter.
    if (!config.has_tenant_max_pins()) {
      o.tenant_max_pins = std::max<uint32_t>(1, o.max_pins / kDefaultTenantShare);
    }
    if (!config.has_tenant_max_pinned_bytes()) {
      o.tenant_max_pinned_bytes = std::max<uint64_t>(
          1, std::min(o.ram.capacity_bytes, o.disk.capacity_bytes) / kDefaultTenantShare);
    }
  }
  o.tenant_max_ram_bytes = config.tenant_max_ram_bytes();
  o.tenant_max_disk_bytes = config.tenant_max_disk_bytes();
  if (config.has_verify_on_open()) o.verify_on_open = config.verify_on_open();
  if (config.has_prefault_ram()) o.prefault_ram = config.prefault_ram();
  if (config.has_max_message_bytes()) s.max_message_bytes = config.max_message_bytes();
  RETURN_IF_ERROR(
      CheckRange("max_message_bytes", s.max_message_bytes, kMinMessageBytes, kMaxMessageBytes));
  if (config.has_max_inflight_bytes()) s.max_inflight_bytes = config.max_inflight_bytes();
  // Half for gRPC, half for the service: the largest message fits either.
  RETURN_IF_ERROR(CheckRange("max_inflight_bytes", s.max_inflight_bytes,
                             2 * s.max_message_bytes, uint64_t{1} << 40));
  if (config.has_shutdown_demote_ms()) s.shutdown_demote_ms = config.shutdown_demote_ms();
  RETURN_IF_ERROR(CheckRange("shutdown_demote_ms", s.shutdown_demote_ms, 0, 3'600'000));
  if (config.has_log_format()) {
    if (config.log_format() == "json") {
      s.log_format = LogFormat::kJson;
    } else if (config.log_format() != "text") {
      return absl::InvalidArgumentError(absl::StrFormat(
          "log_format \"%s\" unknown; expected text or json", absl::CEscape(config.log_format())));
    }
  }
  if (config.has_log_level()) {
    ASSIGN_OR_RETURN(s.log_level, ParseLogLevel(config.log_level()));
  }
  if (config.has_ucx()) s.ucx = config.ucx();
  if (config.has_ucx_transfer_timeout_ms()) {
    s.ucx_transfer_timeout_ms = config.ucx_transfer_timeout_ms();
  }
  RETURN_IF_ERROR(
      CheckRange("ucx_transfer_timeout_ms", s.ucx_transfer_timeout_ms, 1, 3'600'000));
  if (config.has_ucx_max_sessions()) s.ucx_max_sessions = config.ucx_max_sessions();
  RETURN_IF_ERROR(CheckRange("ucx_max_sessions", s.ucx_max_sessions, 1, 65536));
  if (config.has_ucx_transports()) s.ucx_options.transports = config.ucx_transports();
  if (absl::Status valid = s.ucx_options.Validate(); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("ucx_transports: ", valid.message()));
  }
  if (config.has_ucx_mutex_locks()) s.ucx_options.mutex_locks = config.ucx_mutex_locks();
  if (config.has_local_lanes()) s.local_lanes = config.local_lanes();
  if (config.has_local_max_lanes()) s.local_max_lanes = config.local_max_lanes();
  RETURN_IF_ERROR(CheckRange("local_max_lanes", s.local_max_lanes, 1, 4096));
  if (config.has_local_max_lanes_per_tenant()) {
    s.local_max_lanes_per_tenant = config.local_max_lanes_per_tenant();
  }
  RETURN_IF_ERROR(CheckRange("local_max_lanes_per_tenant", s.local_max_lanes_per_tenant, 1,
                             s.local_max_lanes));
  if (config.has_local_direct_transfers()) {
    s.local_direct_transfers = config.local_direct_transfers();
  }
  s.metrics_listen = config.metrics_listen();
  if (!s.metrics_listen.empty() && !IsHostPort(s.metrics_listen, 0)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "metrics_listen \"%s\": must be host:port", absl::CEscape(s.metrics_listen)));
  }
  if (config.has_event_log_capacity()) s.event_log_capacity = config.event_log_capacity();
  RETURN_IF_ERROR(CheckRange("event_log_capacity", s.event_log_capacity, 0, uint64_t{1} << 26));
  if (config.has_max_event_watchers()) s.max_event_watchers = config.max_event_watchers();
  RETURN_IF_ERROR(CheckRange("max_event_watchers", s.max_event_watchers, 1, 4096));
  if (config.has_max_event_watchers_per_tenant()) {
    s.max_event_watchers_per_tenant = config.max_event_watchers_per_tenant();
  }
  RETURN_IF_ERROR(CheckRange("max_event_watchers_per_tenant", s.max_event_watchers_per_tenant, 1,
                             s.max_event_watchers));
  RETURN_IF_ERROR(ResolveTls(config, &s));
  RETURN_IF_ERROR(ResolveCluster(config, &s));
  // The store's own checks (e.g. the RAM tier's smallest and largest size),
  // so that a configuration that resolves is one the store opens with.
  RETURN_IF_ERROR(o.Validate());
  return s;
}

}  // namespace kvtier::store
