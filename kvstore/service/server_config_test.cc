#include "kvstore/service/server_config.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <string>

#include "absl/types/span.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::store {
namespace {

using ::testing::HasSubstr;

TEST(ServerConfigTest, EmptyConfigGivesDocumentedDefaults) {
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(v1::ServerConfig());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->listen, "127.0.0.1:50051");
  EXPECT_EQ(s->store.data_dir, "./kvtier-data");
  EXPECT_EQ(s->store.ram.capacity_bytes, uint64_t{1} << 30);
  EXPECT_EQ(s->store.disk.capacity_bytes, uint64_t{8} << 30);
  EXPECT_DOUBLE_EQ(s->store.ram.high_watermark, 0.90);
  EXPECT_DOUBLE_EQ(s->store.ram.low_watermark, 0.80);
  EXPECT_EQ(s->store.ram.policy, "lru");
  EXPECT_EQ(s->store.max_batch_pages, 1024u);
  EXPECT_EQ(s->store.max_lookup_pages, 65536u);
  EXPECT_EQ(s->store.max_lookup_entries, 1u << 20);
  EXPECT_EQ(s->store.promote_after_reads, 2u);
  EXPECT_EQ(s->store.max_pin_ttl_ms, uint64_t{24} * 3600 * 1000);
  EXPECT_EQ(s->store.max_pins, 1u << 20);
  EXPECT_TRUE(s->store.verify_on_open);
  EXPECT_FALSE(s->store.prefault_ram);
  EXPECT_EQ(s->max_message_bytes, uint64_t{256} << 20);
  EXPECT_EQ(s->max_inflight_bytes, uint64_t{1} << 30);
  EXPECT_EQ(s->shutdown_demote_ms, 0u);
  EXPECT_EQ(s->log_level, LogLevel::kInfo);
  EXPECT_TRUE(s->ucx);
  EXPECT_EQ(s->ucx_transfer_timeout_ms, 60'000u);
  EXPECT_EQ(s->ucx_max_sessions, 1024u);
  EXPECT_EQ(s->ucx_options.transports, "^tcp");
  EXPECT_TRUE(s->ucx_options.mutex_locks);
}

TEST(ServerConfigTest, ListenAcceptsNamesIpv4AndBracketedIpv6) {
  for (const char* listen : {"localhost:0", "10.1.2.3:65535", "[::1]:50051", "[::]:7"}) {
    v1::ServerConfig c;
    c.set_listen(listen);
    c.set_allow_insecure(true);  // plaintext beyond loopback
    absl::StatusOr<ServerSettings> s = ResolveServerConfig(c);
    ASSERT_TRUE(s.ok()) << listen << ": " << s.status();
    EXPECT_EQ(s->listen, listen);
  }
}

TEST(ServerConfigTest, PlaintextIsOnlyForLoopbackUnlessAllowed) {
  for (const char* listen : {"localhost:1", "127.0.0.1:0", "127.255.0.9:2", "[::1]:3"}) {
    v1::ServerConfig c;
    c.set_listen(listen);
    EXPECT_TRUE(ResolveServerConfig(c).ok()) << listen;
    EXPECT_TRUE(IsLoopbackAddress(listen)) << listen;
  }
  for (const char* listen : {"0.0.0.0:1", "10.0.0.1:2", "[::]:3", "example.com:4", "127.0.0:5",
                             "127.0.0.256:6", "127.0.0.1.2:7", "128.0.0.1:8", "127.0.0.01x:9"}) {
    v1::ServerConfig c;
    c.set_listen(listen);
    EXPECT_FALSE(IsLoopbackAddress(listen)) << listen;
    absl::StatusOr<ServerSettings> s = ResolveServerConfig(c);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << listen;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("not a loopback address")) << listen;
    c.set_allow_insecure(true);
    EXPECT_TRUE(ResolveServerConfig(c).ok()) << listen;
    c.set_allow_insecure(false);
    c.set_tls_cert_file("cert.pem");
    c.set_tls_key_file("key.pem");
    // TLS alone is not enough: without an access file every caller would
    // be an admin of one tenant.
    s = ResolveServerConfig(c);
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << listen;
    EXPECT_THAT(std::string(s.status().message()), HasSubstr("no access_file")) << listen;
    c.set_access_file("access.txt");
    EXPECT_TRUE(ResolveServerConfig(c).ok()) << listen;
    c.clear_tls_cert_file();
    c.clear_tls_key_file();
    // An access file without TLS: tokens would cross the network in the clear.
    EXPECT_EQ(ResolveServerConfig(c).status().code(), absl::StatusCode::kInvalidArgument)
        << listen;
  }
}

TEST(ServerConfigTest, TenantQuotasReachTheStore) {
  v1::ServerConfig c;
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(c);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->store.tenant_max_pins, 0u);
  EXPECT_EQ(s->store.tenant_max_pinned_bytes, 0u);
  EXPECT_EQ(s->store.tenant_max_ram_bytes, 0u);
  EXPECT_EQ(s->store.tenant_max_disk_bytes, 0u);
  c.set_tenant_max_pins(3);
  c.set_tenant_max_pinned_bytes(uint64_t{5} << 30);
  c.set_tenant_max_ram_bytes(uint64_t{6} << 30);
  c.set_tenant_max_disk_bytes(UINT64_MAX);
  s = ResolveServerConfig(c);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->store.tenant_max_pins, 3u);
  EXPECT_EQ(s->store.tenant_max_pinned_bytes, uint64_t{5} << 30);
  EXPECT_EQ(s->store.tenant_max_ram_bytes, uint64_t{6} << 30);
  EXPECT_EQ(s->store.tenant_max_disk_bytes, UINT64_MAX);
  TenantQuotas defaults;
  defaults.max_ram_bytes = uint64_t{6} << 30;
  defaults.max_disk_bytes = UINT64_MAX;
  defaults.max_pins = 3;
  defaults.max_pinned_bytes = uint64_t{5} << 30;
  EXPECT_EQ(s->store.DefaultTenantQuotas(), defaults);
  // Tenants of an access file share the server: unset, each may hold a
  // quarter of the pins and of the smaller tier pinned; set (0 included),
  // the given value holds.
  v1::ServerConfig shared;
  shared.set_access_file("access.txt");
  shared.set_max_pins(1000);
  shared.mutable_ram()->set_capacity_bytes(uint64_t{1} << 30);
  shared.mutable_disk()->set_capacity_bytes(uint64_t{8} << 30);
  s = ResolveServerConfig(shared);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->store.tenant_max_pins, 250u);
  EXPECT_EQ(s->store.tenant_max_pinned_bytes, uint64_t{1} << 28);
  EXPECT_EQ(s->store.tenant_max_ram_bytes, 0u);
  shared.set_tenant_max_pins(0);
  shared.set_tenant_max_pinned_bytes(7);
  s = ResolveServerConfig(shared);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->store.tenant_max_pins, 0u);
  EXPECT_EQ(s->store.tenant_max_pinned_bytes, 7u);
}

TEST(ServerConfigTest, OnlyTrustedClientsGetTheArenaAndSharedMemory) {
  v1::ServerConfig c;
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(c);
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->trusted_local_clients);
  EXPECT_FALSE(s->ucx_options.shared_memory);
  EXPECT_TRUE(s->access_file.empty());
  c.set_trusted_local_clients(true);
  c.set_access_file("access.txt");
  s = ResolveServerConfig(c);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->trusted_local_clients);
  EXPECT_TRUE(s->ucx_options.shared_memory);
  EXPECT_EQ(s->access_file, "access.txt");
}

TEST(ServerConfigTest, TlsFilesGoTogetherAndTurnTheDataPlaneOff) {
  v1::ServerConfig c;
  c.set_tls_cert_file("cert.pem");
  EXPECT_EQ(ResolveServerConfig(c).status().code(), absl::StatusCode::kInvalidArgument);
  c.clear_tls_cert_file();
  c.set_tls_client_ca_file("ca.pem");
  EXPECT_EQ(ResolveServerConfig(c).status().code(), absl::StatusCode::kInvalidArgument);
  c.set_tls_cert_file("cert.pem");
  c.set_tls_key_file("key.pem");
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(c);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->tls());
  EXPECT_EQ(s->tls_client_ca_file, "ca.pem");
  // Page bytes stay inside TLS: no UCX data plane by default...
  EXPECT_FALSE(s->ucx);
  // ...and asking for it needs allow_insecure.
  c.set_ucx(true);
  EXPECT_EQ(ResolveServerConfig(c).status().code(), absl::StatusCode::kInvalidArgument);
  c.set_allow_insecure(true);
  s = ResolveServerConfig(c);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_TRUE(s->ucx);
}

TEST(ServerConfigTest, ReflectionIsOffByDefault) {
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(v1::ServerConfig());
  ASSERT_TRUE(s.ok());
  EXPECT_FALSE(s->enable_reflection);
  EXPECT_FALSE(s->tls());
  EXPECT_FALSE(s->allow_insecure);
}

TEST(ServerConfigTest, UcxOptionsAreTakenFromTheConfig) {
  absl::StatusOr<v1::ServerConfig> c = ParseServerConfigText(
      "ucx_transports: \"posix,cma,self\"\nucx_mutex_locks: false\n", "t");
  ASSERT_TRUE(c.ok()) << c.status();
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(*c);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->ucx_options.transports, "posix,cma,self");
  EXPECT_FALSE(s->ucx_options.mutex_locks);
}

TEST(ServerConfigTest, ParsesTextFormatAndOverridesWin) {
  absl::StatusOr<v1::ServerConfig> c = ParseServerConfigText(
      "listen: \"0.0.0.0:7000\"\n"
      "data_dir: \"/tmp/x\"\n"
      "ram { capacity_bytes: 4096 policy: \"s3fifo\" high_watermark: 0.5 low_watermark: 0.25 }\n"
      "max_batch_pages: 8\n"
      "prefault_ram: true\n"
      "log_level: \"debug\"\n"
      "allow_insecure: true\n",
      "test.conf");
  ASSERT_TRUE(c.ok()) << c.status();
  v1::ServerConfig overrides;
  overrides.set_max_batch_pages(16);
  overrides.mutable_ram()->set_capacity_bytes(8192);
  c->MergeFrom(overrides);
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(*c);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->listen, "0.0.0.0:7000");
  EXPECT_EQ(s->store.data_dir, "/tmp/x");
  EXPECT_EQ(s->store.ram.capacity_bytes, 8192u);
  EXPECT_EQ(s->store.ram.policy, "s3fifo");  // file value kept under the override
  EXPECT_DOUBLE_EQ(s->store.ram.high_watermark, 0.5);
  EXPECT_DOUBLE_EQ(s->store.ram.low_watermark, 0.25);
  EXPECT_EQ(s->store.max_batch_pages, 16u);
  EXPECT_TRUE(s->store.prefault_ram);
  EXPECT_EQ(s->log_level, LogLevel::kDebug);
}

TEST(ServerConfigTest, SyntaxErrorNamesLineAndColumn) {
  absl::StatusOr<v1::ServerConfig> c =
      ParseServerConfigText("listen: \"a:1\"\nmax_batch_pages: \"many\"\n", "bad.conf");
  ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("bad.conf:2:"), std::string::npos) << c.status();
}

TEST(ServerConfigTest, UnknownFieldIsAnError) {
  absl::StatusOr<v1::ServerConfig> c = ParseServerConfigText("ram_size: 5\n", "u.conf");
  ASSERT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(c.status().message().find("ram_size"), std::string::npos) << c.status();
  EXPECT_NE(c.status().message().find("u.conf:1:"), std::string::npos) << c.status();
}

struct BadCase {
  const char* text;
  const char* field;
};

// Each case's text parses, and resolving it is INVALID_ARGUMENT with a
// message that starts with the field's name.
void ExpectEachRefusedNamingItsField(absl::Span<const BadCase> cases) {
  for (const BadCase& c : cases) {
    absl::StatusOr<v1::ServerConfig> config = ParseServerConfigText(c.text, "t");
    ASSERT_TRUE(config.ok()) << c.text << ": " << config.status();
    absl::StatusOr<ServerSettings> s = ResolveServerConfig(*config);
    ASSERT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_EQ(s.status().message().rfind(c.field, 0), 0u) << c.text << ": " << s.status();
  }
}

TEST(ServerConfigTest, ClusterDefaultsToOneNodeWithoutMembership) {
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(v1::ServerConfig());
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->node_id, "local");
  EXPECT_EQ(s->cluster_name, "default");
  EXPECT_EQ(s->lease_ttl_s, 10u);
  EXPECT_TRUE(s->advertise_address.empty());
  EXPECT_TRUE(s->etcd_endpoints.empty());
  EXPECT_TRUE(s->static_members.empty());
  EXPECT_EQ(s->replicas, 2u);
  EXPECT_EQ(s->drain_timeout_s, 30u);
  EXPECT_EQ(s->rebalance_bytes_per_s, uint64_t{128} << 20);
  EXPECT_EQ(s->metrics_listen, "");
  EXPECT_EQ(s->log_format, LogFormat::kText);
  EXPECT_EQ(s->event_log_capacity, 1u << 18);
  EXPECT_EQ(s->max_event_watchers, 64u);
  EXPECT_EQ(s->max_event_watchers_per_tenant, 8u);
  EXPECT_TRUE(s->peer_token_file.empty());
  EXPECT_TRUE(s->peer_tls_ca_file.empty());
  EXPECT_FALSE(s->clustered());
}

TEST(ServerConfigTest, StaticMembersAreParsedAndSortedById) {
  absl::StatusOr<v1::ServerConfig> config = ParseServerConfigText(
      "node_id: \"b\" static_members: \"c=10.0.0.3:7000\" static_members: \"b=127.0.0.1:7001\" "
      "static_members: \"a=[::1]:7002\"",
      "t");
  ASSERT_TRUE(config.ok()) << config.status();
  absl::StatusOr<ServerSettings> s = ResolveServerConfig(*config);
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_EQ(s->static_members.size(), 3u);
  EXPECT_EQ(s->static_members[0].id(), "a");
  EXPECT_EQ(s->static_members[0].address(), "[::1]:7002");
  EXPECT_EQ(s->static_members[1].id(), "b");
  EXPECT_EQ(s->static_members[2].address(), "10.0.0.3:7000");
  EXPECT_EQ(s->static_members[2].state(), v1::MEMBER_UP);
  EXPECT_TRUE(s->clustered());
}

TEST(ServerConfigTest, BadClusterSettingsNameTheField) {
  const BadCase cases[] = {
      {"node_id: \"\"", "node_id"},
      {"node_id: \"a/b\"", "node_id"},
      {"node_id: \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "node_id"},
      {"cluster_name: \"x y\"", "cluster_name"},
      {"lease_ttl_s: 1", "lease_ttl_s"},
      {"lease_ttl_s: 301", "lease_ttl_s"},
      {"advertise_address: \"host\"", "advertise_address"},
      {"advertise_address: \"host:0\"", "advertise_address"},
      {"etcd_endpoints: \"127.0.0.1\"", "etcd_endpoints"},
      {"etcd_endpoints: \"127.0.0.1:2379/x\"", "etcd_endpoints"},
      {"node_id: \"a\" static_members: \"a\"", "static_members"},
      {"node_id: \"a\" static_members: \"=h:1\"", "static_members"},
      {"node_id: \"a\" static_members: \"a=h:1\" static_members: \"a=h:2\"", "static_members"},
      {"node_id: \"a\" static_members: \"b=h:1\"", "static_members"},
      {"node_id: \"a\" static_members: \"a=h:1\" etcd_endpoints: \"h:2379\"", "etcd_endpoints"},
      {"etcd_endpoints: \"h:2379\"", "node_id"},
      {"replicas: 0", "replicas"},
      {"replicas: 17", "replicas"},
      {"drain_timeout_s: 3601", "drain_timeout_s"},
      {"event_log_capacity: 67108865", "event_log_capacity"},
      {"rebalance_bytes_per_s: 1099511627777", "rebalance_bytes_per_s"},
      {"metrics_listen: \"9464\"", "metrics_listen"},
      {"log_format: \"xml\"", "log_format"},
      {"metrics_listen: \"host:99999\"", "metrics_listen"},
      {"max_event_watchers: 0", "max_event_watchers"},
      {"max_event_watchers: 4097", "max_event_watchers"},
      {"max_event_watchers_per_tenant: 0", "max_event_watchers_per_tenant"},
      {"max_event_watchers: 4 max_event_watchers_per_tenant: 5", "max_event_watchers_per_tenant"},
      {"node_id: \"a\" static_members: \"a=h:1\" tls_cert_file: \"c\" tls_key_file: \"k\"",
       "peer_tls_ca_file"},
      {"node_id: \"a\" static_members: \"a=h:1\" access_file: \"f\"", "peer_token_file"},
      {"node_id: \"a\" etcd_endpoints: \"h:2379\" listen: \"0.0.0.0:1\" allow_insecure: true",
       "advertise_address"},
  };
  ExpectEachRefusedNamingItsField(cases);
  // A wildcard listen address is fine once the node says where to dial it.
  absl::StatusOr<v1::ServerConfig> config = ParseServerConfigText(
      "node_id: \"a\" etcd_endpoints: \"h:2379\" listen: \"0.0.0.0:1\" allow_insecure: true "
      "advertise_address: \"10.0.0.1:1\"",
      "t");
  ASSERT_TRUE(config.ok());
  EXPECT_TRUE(ResolveServerConfig(*config).ok());
}

TEST(ServerConfigTest, OutOfRangeValuesNameTheField) {
  const BadCase cases[] = {
      {"ram { capacity_bytes: 0 }", "ram.capacity_bytes"},
      {"disk { high_watermark: 1.5 }", "disk.high_watermark"},
      {"ram { high_watermark: 0.5 low_watermark: 0.6 }", "ram.low_watermark"},
      {"ram { low_watermark: 0 }", "ram.low_watermark"},
      {"disk { policy: \"fifo\" }", "disk.policy"},
      {"max_batch_pages: 0", "max_batch_pages"},
      {"max_lookup_pages: 0", "max_lookup_pages"},
      {"max_lookup_entries: 0", "max_lookup_entries"},
      {"max_lookup_entries: 67108865", "max_lookup_entries"},
      {"promote_after_reads: 0", "promote_after_reads"},
      {"max_pin_ttl_ms: 0", "max_pin_ttl_ms"},
      {"max_pins: 0", "max_pins"},
      {"ucx_transfer_timeout_ms: 0", "ucx_transfer_timeout_ms"},
      {"ucx_transfer_timeout_ms: 3600001", "ucx_transfer_timeout_ms"},
      {"ucx_max_sessions: 0", "ucx_max_sessions"},
      {"ucx_max_sessions: 65537", "ucx_max_sessions"},
      {"ucx_transports: \"\"", "ucx_transports"},
      {"ucx_transports: \"tcp\\nUCX_X=1\"", "ucx_transports"},
      {"max_message_bytes: 1024", "max_message_bytes"},
      {"max_message_bytes: 4294967296", "max_message_bytes"},
      // Half of it below the largest message: a lone put of that size
      // could never fit.
      {"max_inflight_bytes: 536870911", "max_inflight_bytes"},
      {"max_message_bytes: 8388608 max_inflight_bytes: 16777215", "max_inflight_bytes"},
      {"max_inflight_bytes: 1099511627777", "max_inflight_bytes"},
      {"shutdown_demote_ms: 3600001", "shutdown_demote_ms"},
      {"log_level: \"loud\"", "log_level"},
      {"listen: \"nowhere\"", "listen"},
      {"listen: \"0.0.0.0:p/kvtier\"", "listen"},
      {"listen: \":50051\"", "listen"},
      {"listen: \"host:\"", "listen"},
      {"listen: \"host:65536\"", "listen"},
      {"listen: \"host:-1\"", "listen"},
      {"ram { capacity_bytes: 41 }", "ram.capacity_bytes"},
      {"ram { capacity_bytes: 18446744073709551615 }", "ram.capacity_bytes"},
      {"data_dir: \"\"", "data_dir"},
  };
  ExpectEachRefusedNamingItsField(cases);
}

TEST(ServerConfigTest, LoadFileMissingAndPresent) {
  EXPECT_EQ(LoadServerConfigFile("/nonexistent/kvtier.conf").status().code(),
            absl::StatusCode::kNotFound);
  const std::string path = ::testing::TempDir() + "/server_config_test." + std::to_string(getpid()) + ".conf";
  {
    std::ofstream out(path);
    out << "# comment\nmax_lookup_pages: 77\n";
  }
  absl::StatusOr<v1::ServerConfig> c = LoadServerConfigFile(path);
  ASSERT_TRUE(c.ok()) << c.status();
  EXPECT_EQ(c->max_lookup_pages(), 77u);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvtier::store
