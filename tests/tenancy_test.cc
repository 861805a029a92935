// Tenants of the real kvtier-server: bearer tokens and client certificates
// from an access file, roles, one key space per tenant (another tenant's
// pages answer exactly as absent ones), tenant-scoped pins, the opt-in
// shared namespace, and the access file's reload on SIGHUP.
#include <signal.h>

#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "gmock/gmock.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "kvstore/access/access_table.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/store.grpc.pb.h"
#include "testing/server_process.h"

namespace kvtier::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kAcme[] = "acme-token-0123456789abcdef";
constexpr char kGlobex[] = "globex-token-0123456789abcdef";
constexpr char kOps[] = "ops-token-0123456789abcdef";
constexpr char kInitech[] = "initech-token-0123456789abcdef";

std::string Tls(const std::string& name) { return absl::StrCat(KVTIER_TLS_DIR, "/", name); }

std::string Line(const std::string& tenant, const std::string& role, const std::string& token,
                 const std::string& shared = "none") {
  return absl::StrCat("tenant=", tenant, " role=", role,
                      " token_sha256=", access::HashToken(token), " shared=", shared, "\n");
}

PageLayout Layout() {
  return PageLayout{.page_size = 4, .n_kv_heads = 2, .head_dim = 8, .dtype = DType::kF32};
}

PageKey KeyOf(uint64_t n) { return PageKey{.hash = {.hi = 0xacce55, .lo = n}, .layer = 0}; }

// The bytes of a page filled with `fill` (they live as long as the test).
const std::string& Fill(char fill) {
  static auto* bytes = new std::map<char, std::string>();
  auto [it, added] = bytes->try_emplace(fill);
  if (added) it->second.assign(Layout().PageBytes(), fill);
  return it->second;
}

client::PutPage PageOf(uint64_t n, char fill) {
  const std::string& bytes = Fill(fill);
  return client::PutPage{
      .key = KeyOf(n),
      .layout = Layout(),
      .data = {reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()}};
}

class TenancyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteAccess(Line("acme", "tenant", kAcme, "read") + Line("globex", "tenant", kGlobex) +
                Line("ops", "admin", kOps, "write") + "tenant=acme role=tenant cert_cn=tenant-a\n");
  }

  void WriteAccess(const std::string& text) {
    std::ofstream(access_path_, std::ios::trunc) << text;
  }

  void Start(std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"--data_dir=" + dir_.path() + "/data", "--ram_bytes=8388608",
                                     "--disk_bytes=67108864", "--noucx",
                                     "--access_file=" + access_path_};
    args.insert(args.end(), extra.begin(), extra.end());
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }

  std::unique_ptr<client::StoreClient> Client(const std::string& token, bool shared = false,
                                              client::ClientOptions options = {}) {
    options.token = token;
    options.shared_namespace = shared;
    options.max_attempts = 1;
    options.deadline_ms = 10'000;
    options.use_ucx = false;
    absl::StatusOr<std::unique_ptr<client::StoreClient>> c =
        client::StoreClient::Connect(server_->target(), options);
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }

  // Waits (bounded) until the server's log shows `text`.
  void AwaitLog(const std::string& text) { ASSERT_TRUE(server_->AwaitStderr(text).ok()) << text; }

  TempDir dir_;
  const std::string access_path_ = dir_.path() + "/access.txt";
  std::unique_ptr<ServerProcess> server_;
};

// A raw call with exactly the given authorization metadata (none if empty).
grpc::Status RawLookup(const std::string& target, const std::string& authorization) {
  auto stub = v1::KvStore::NewStub(
      grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  if (!authorization.empty()) context.AddMetadata("authorization", authorization);
  v1::LookupRequest request;
  request.add_chain(std::string(16, 'x'));
  v1::LookupResponse response;
  return stub->Lookup(&context, request, &response);
}

// A metrics credential reads /metrics alone: every RPC refuses it.
TEST_F(TenancyTest, AMetricsCredentialCallsNoRpc) {
  constexpr char kProm[] = "prom-token-0123456789abcdef";
  WriteAccess(Line("acme", "tenant", kAcme) + Line("ops", "admin", kOps) +
              Line("prom", "metrics", kProm));
  ASSERT_NO_FATAL_FAILURE(Start());
  const grpc::Status lookup = RawLookup(server_->target(), absl::StrCat("Bearer ", kProm));
  EXPECT_EQ(lookup.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(lookup.error_message(),
            "tenant prom: a metrics credential calls no RPC (it reads /metrics)");
  EXPECT_EQ(Client(kProm)->Stats().status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Client(kProm)->Drain(0).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(RawLookup(server_->target(), absl::StrCat("Bearer ", kAcme)).error_code(),
            grpc::StatusCode::OK);
}

// Drain is an operator's: a tenant is refused, an admin gets the node's
// answer (this node is in no cluster).
TEST_F(TenancyTest, DrainIsForAdminsOnly) {
  ASSERT_NO_FATAL_FAILURE(Start());
  EXPECT_EQ(Client(kAcme)->Drain(0).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Client("")->Drain(0).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(Client(kOps)->Drain(0).status().code(), absl::StatusCode::kFailedPrecondition);
}

// Another node's copy: admins only, into the named tenant's key space, its
// pin expiries honoured, and a malformed request changes nothing.
TEST_F(TenancyTest, ReplicaPutIsForAdminsAndStoresInTheNamedTenant) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const client::PutPage page = PageOf(7, 'r');
  v1::ReplicaPutRequest request;
  request.set_tenant(access::TenantTag("acme"));
  v1::PutPage* wire = request.add_pages();
  v1::KeyToProto(page.key, wire->mutable_key());
  v1::LayoutToProto(page.layout, wire->mutable_layout());
  wire->set_checksum(PageChecksum(page.data.data(), page.data.size()));
  wire->set_inline_data(std::string(page.data.begin(), page.data.end()));
  request.add_pin_expiry_unix_ms(absl::ToUnixMillis(absl::Now() + absl::Minutes(10)));

  EXPECT_EQ(Client(kAcme)->ReplicaPut(request).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::ReplicaPutRequest two_expiries = request;
  two_expiries.add_pin_expiry_unix_ms(1);
  EXPECT_EQ(Client(kOps)->ReplicaPut(two_expiries).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::ReplicaPutRequest negative = request;
  negative.set_pin_expiry_unix_ms(0, -5);
  EXPECT_EQ(Client(kOps)->ReplicaPut(negative).status().code(),
            absl::StatusCode::kInvalidArgument);
  v1::ReplicaPutRequest corrupt = request;
  corrupt.mutable_pages(0)->set_checksum(wire->checksum() ^ 1);
  EXPECT_EQ(Client(kOps)->ReplicaPut(corrupt).status().code(),
            absl::StatusCode::kDataLoss);
  absl::StatusOr<std::vector<client::GotPage>> got = Client(kAcme)->BatchGet({page.key});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0].status, v1::PAGE_STATUS_NOT_FOUND);

  absl::StatusOr<v1::ReplicaPutResponse> stored = Client(kOps)->ReplicaPut(request);
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->stored_pages(), 1u);
  EXPECT_EQ(stored->present_pages(), 0u);
  EXPECT_EQ(stored->pinned_pages(), 1u);
  // acme reads it; globex, whose key space it is not in, does not.
  got = Client(kAcme)->BatchGet({page.key});
  ASSERT_TRUE(got.ok());
  ASSERT_EQ((*got)[0].status, v1::PAGE_STATUS_OK);
  EXPECT_EQ((*got)[0].data, std::string(page.data.begin(), page.data.end()));
  got = Client(kGlobex)->BatchGet({page.key});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0].status, v1::PAGE_STATUS_NOT_FOUND);
  // Pinned: acme cannot delete it without force.
  EXPECT_EQ(Client(kAcme)->Delete({page.key}).status().code(),
            absl::StatusCode::kFailedPrecondition);
  stored = Client(kOps)->ReplicaPut(request);
  ASSERT_TRUE(stored.ok());
  EXPECT_EQ(stored->present_pages(), 1u);
}

TEST_F(TenancyTest, CallsWithoutAKnownCredentialAreUnauthenticated) {
  ASSERT_NO_FATAL_FAILURE(Start());
  for (const std::string& auth :
       {std::string(), absl::StrCat("Bearer ", kInitech), std::string("Bearer "),
        absl::StrCat("Basic ", kAcme), absl::StrCat("bearer ", kAcme), std::string("Bearer x")}) {
    EXPECT_EQ(RawLookup(server_->target(), auth).error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << auth;
  }
  EXPECT_TRUE(RawLookup(server_->target(), absl::StrCat("Bearer ", kAcme)).ok());
  // Every kind of call, through the client without a token: refused, and
  // nothing changed.
  std::unique_ptr<client::StoreClient> anonymous = Client("");
  const std::vector<client::PutPage> pages = {PageOf(1, 'a')};
  EXPECT_EQ(anonymous->BatchPut(pages).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->BatchGet({KeyOf(1)}).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->Delete({KeyOf(1)}).status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->Pin({KeyOf(1)}, 1000).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->Unpin(std::string(16, 'p')).code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(anonymous->Stats().status().code(), absl::StatusCode::kUnauthenticated);
  absl::StatusOr<v1::StatsResponse> stats = Client(kOps)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(stats->put_pages(), 0u);
}

TEST_F(TenancyTest, AdminRpcsNeedTheAdminRole) {
  ASSERT_NO_FATAL_FAILURE(Start());
  absl::Status denied = Client(kAcme)->Stats().status();
  EXPECT_EQ(denied.code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(std::string(denied.message()), HasSubstr("admin"));
  EXPECT_TRUE(Client(kOps)->Stats().ok());
}

// The request and the answer of one call, for comparing two calls.
struct Seen {
  absl::StatusCode code;
  std::string message;
  std::string response;
};

TEST_F(TenancyTest, AnotherTenantsPagesAnswerExactlyAsAbsentOnes) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::unique_ptr<client::StoreClient> acme = Client(kAcme);
  std::unique_ptr<client::StoreClient> globex = Client(kGlobex);
  ASSERT_TRUE(acme->BatchPut({PageOf(1, 'a'), PageOf(2, 'b')}).ok());
  absl::StatusOr<std::string> acme_pin = acme->Pin({KeyOf(1)}, 600'000);
  ASSERT_TRUE(acme_pin.ok()) << acme_pin.status();

  // globex's view of acme's keys 1, 2 and of keys 101, 102 nobody stored,
  // with each key's hex replaced, must be the same.
  auto view = [&](uint64_t first) {
    std::vector<Seen> seen;
    auto add = [&](const absl::Status& s, const std::string& response) {
      std::string message(s.message());
      for (uint64_t n : {first, first + 1}) {
        message = absl::StrReplaceAll(message, {{KeyOf(n).hash.ToHex(), "KEY"}});
      }
      seen.push_back({s.code(), message, response});
    };
    const std::vector<PageKey> keys = {KeyOf(first), KeyOf(first + 1)};
    absl::StatusOr<std::vector<client::GotPage>> got = globex->BatchGet(keys);
    std::string statuses;
    if (got.ok()) {
      for (const client::GotPage& page : *got) {
        absl::StrAppend(&statuses, static_cast<int>(page.status), "/", page.data.size(), ";");
      }
    }
    add(got.status(), statuses);
    absl::StatusOr<client::LookupReply> lookup =
        globex->Lookup({KeyOf(first).hash, KeyOf(first + 1).hash}, 0, 1);
    std::string tiers;
    if (lookup.ok()) {
      absl::StrAppend(&tiers, lookup->prefix_pages, ":");
      for (v1::Tier t : lookup->tiers) absl::StrAppend(&tiers, static_cast<int>(t), ",");
    }
    add(lookup.status(), tiers);
    absl::StatusOr<std::string> pin = globex->Pin(keys, 1000);
    add(pin.status(), "");
    absl::StatusOr<uint32_t> deleted = globex->Delete(keys, /*force=*/false);
    add(deleted.status(), absl::StrCat(deleted.value_or(99)));
    deleted = globex->Delete(keys, /*force=*/true);
    add(deleted.status(), absl::StrCat(deleted.value_or(99)));
    return seen;
  };
  const std::vector<Seen> others = view(1);
  const std::vector<Seen> absent = view(101);
  ASSERT_EQ(others.size(), absent.size());
  for (size_t i = 0; i < others.size(); ++i) {
    EXPECT_EQ(others[i].code, absent[i].code) << i;
    EXPECT_EQ(others[i].message, absent[i].message) << i;
    EXPECT_EQ(others[i].response, absent[i].response) << i;
  }
  EXPECT_EQ(others[0].response, absl::StrCat(static_cast<int>(v1::PAGE_STATUS_NOT_FOUND), "/0;",
                                             static_cast<int>(v1::PAGE_STATUS_NOT_FOUND), "/0;"));
  EXPECT_EQ(others[2].code, absl::StatusCode::kNotFound);
  EXPECT_EQ(others[4].response, "0");

  // acme's pin is not globex's to end, and answers as a pin nobody made.
  const std::string unknown(16, '\x11');
  const absl::Status theirs = globex->Unpin(*acme_pin);
  const absl::Status nobodys = globex->Unpin(unknown);
  EXPECT_EQ(theirs.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(nobodys.code(), absl::StatusCode::kNotFound);
  // Messages name an id by its first 4 bytes.
  auto shown = [](const std::string& id) { return absl::BytesToHexString(id.substr(0, 4)); };
  EXPECT_EQ(absl::StrReplaceAll(theirs.message(), {{shown(*acme_pin), "ID"}}),
            absl::StrReplaceAll(nobodys.message(), {{shown(unknown), "ID"}}));
  EXPECT_EQ(nobodys.message(), "pin 11111111 is unknown or expired");
  EXPECT_EQ(globex->Pin({}, 1000, *acme_pin).status().code(), absl::StatusCode::kNotFound);

  // acme's pages and pin came through untouched.
  absl::StatusOr<std::vector<client::GotPage>> mine = acme->BatchGet({KeyOf(1), KeyOf(2)});
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ((*mine)[0].data, Fill('a'));
  EXPECT_EQ((*mine)[1].data, Fill('b'));
  EXPECT_EQ(Client(kOps)->Stats()->active_pins(), 1u);
  EXPECT_TRUE(acme->Unpin(*acme_pin).ok());
}

TEST_F(TenancyTest, EqualKeysOfTwoTenantsAreTwoPages) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::unique_ptr<client::StoreClient> acme = Client(kAcme);
  std::unique_ptr<client::StoreClient> globex = Client(kGlobex);
  absl::StatusOr<std::vector<client::PutOutcome>> put = acme->BatchPut({PageOf(7, 'a')});
  ASSERT_TRUE(put.ok());
  put = globex->BatchPut({PageOf(7, 'g')});
  ASSERT_TRUE(put.ok());
  EXPECT_FALSE((*put)[0].already_present);  // no sharing, and no telling
  EXPECT_EQ((*acme->BatchGet({KeyOf(7)}))[0].data, Fill('a'));
  EXPECT_EQ((*globex->BatchGet({KeyOf(7)}))[0].data, Fill('g'));
  EXPECT_EQ(Client(kOps)->Stats()->ram().pages(), 2u);
  absl::StatusOr<std::string> a = acme->Pin({KeyOf(7)}, 1000);
  absl::StatusOr<std::string> b = acme->Pin({KeyOf(7)}, 1000);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->size(), 16u);
  EXPECT_NE(*a, *b);
}

TEST_F(TenancyTest, TheSharedNamespaceIsOptInPerCredential) {
  ASSERT_NO_FATAL_FAILURE(Start());
  // ops may write it, acme read it, globex neither.
  ASSERT_TRUE(Client(kOps, /*shared=*/true)->BatchPut({PageOf(3, 's')}).ok());
  absl::StatusOr<std::vector<client::GotPage>> read =
      Client(kAcme, /*shared=*/true)->BatchGet({KeyOf(3)});
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ((*read)[0].data, Fill('s'));
  EXPECT_EQ((*Client(kAcme, /*shared=*/true)->Lookup({KeyOf(3).hash}, 0, 1)).prefix_pages, 1u);
  // Not in anyone's own key space.
  EXPECT_EQ((*Client(kAcme)->BatchGet({KeyOf(3)}))[0].status, v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ((*Client(kOps)->BatchGet({KeyOf(3)}))[0].status, v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ(Client(kAcme, /*shared=*/true)->BatchPut({PageOf(4, 'x')}).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Client(kAcme, /*shared=*/true)->Delete({KeyOf(3)}, true).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(Client(kGlobex, /*shared=*/true)->BatchGet({KeyOf(3)}).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ((*Client(kOps, /*shared=*/true)->BatchGet({KeyOf(3)}))[0].data, Fill('s'));
}

TEST_F(TenancyTest, TheAccessFileReloadsOnSighupAndABadOneChangesNothing) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_TRUE(Client(kGlobex)->BatchPut({PageOf(5, 'g')}).ok());
  // globex's token is revoked and initech admitted.
  WriteAccess(Line("acme", "tenant", kAcme) + Line("initech", "tenant", kInitech) +
              Line("ops", "admin", kOps));
  ASSERT_TRUE(server_->Signal(SIGHUP).ok());
  ASSERT_NO_FATAL_FAILURE(AwaitLog("access file reloaded tokens=3"));
  EXPECT_EQ(Client(kGlobex)->BatchGet({KeyOf(5)}).status().code(),
            absl::StatusCode::kUnauthenticated);
  EXPECT_TRUE(Client(kInitech)->BatchGet({KeyOf(5)}).ok());
  // A damaged file: the server keeps the last good table.
  WriteAccess("tenant=acme role=superuser token_sha256=" + access::HashToken(kAcme) + "\n");
  ASSERT_TRUE(server_->Signal(SIGHUP).ok());
  ASSERT_NO_FATAL_FAILURE(AwaitLog("access file not reloaded"));
  EXPECT_THAT(server_->StderrText(), HasSubstr("access.txt:1"));
  EXPECT_TRUE(Client(kInitech)->BatchGet({KeyOf(5)}).ok());
  EXPECT_TRUE(Client(kOps)->Stats().ok());
  EXPECT_EQ(Client(kGlobex)->Stats().status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(TenancyTest, AVerifiedClientCertificateNamesItsTenant) {
  ASSERT_NO_FATAL_FAILURE(Start({"--tls_cert_file=" + Tls("server.pem"),
                                 "--tls_key_file=" + Tls("server.key"),
                                 "--tls_client_ca_file=" + Tls("ca.pem")}));
  client::ClientOptions mtls;
  mtls.tls = true;
  mtls.tls_ca_file = Tls("ca.pem");
  mtls.tls_cert_file = Tls("client.pem");  // CN tenant-a: acme in the access file
  mtls.tls_key_file = Tls("client.key");
  mtls.tls_server_name = "localhost";
  std::unique_ptr<client::StoreClient> by_certificate = Client("", false, mtls);
  ASSERT_TRUE(by_certificate->BatchPut({PageOf(9, 'c')}).ok());
  // The same tenant by token; another by token (a token wins over the
  // certificate); the certificate alone is no admin.
  EXPECT_EQ((*Client(kAcme, false, mtls)->BatchGet({KeyOf(9)}))[0].data, Fill('c'));
  EXPECT_EQ((*Client(kGlobex, false, mtls)->BatchGet({KeyOf(9)}))[0].status,
            v1::PAGE_STATUS_NOT_FOUND);
  EXPECT_EQ(by_certificate->Stats().status().code(), absl::StatusCode::kPermissionDenied);
}

TEST_F(TenancyTest, PinQuotasHoldEachTenantAlone) {
  ASSERT_NO_FATAL_FAILURE(Start({"--tenant_max_pins=1"}));
  std::unique_ptr<client::StoreClient> acme = Client(kAcme);
  std::unique_ptr<client::StoreClient> globex = Client(kGlobex);
  ASSERT_TRUE(acme->BatchPut({PageOf(1, 'a'), PageOf(2, 'b')}).ok());
  ASSERT_TRUE(globex->BatchPut({PageOf(1, 'g')}).ok());
  absl::StatusOr<std::string> pin = acme->Pin({KeyOf(1)}, 600'000);
  ASSERT_TRUE(pin.ok()) << pin.status();
  const absl::Status refused = acme->Pin({KeyOf(2)}, 600'000).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("tenant_max_pins"));
  EXPECT_TRUE(globex->Pin({KeyOf(1)}, 600'000).ok());
  EXPECT_TRUE(acme->Pin({KeyOf(2)}, 600'000, *pin).ok());  // extending is no new pin
  EXPECT_EQ(Client(kOps)->Stats()->active_pins(), 2u);
}

// Unset, a tenant of the access file holds at most a quarter of the pins:
// one that pins all it can leaves the others room.
TEST_F(TenancyTest, ByDefaultNoTenantTakesEveryPin) {
  ASSERT_NO_FATAL_FAILURE(Start({"--max_pins=8"}));
  std::unique_ptr<client::StoreClient> acme = Client(kAcme);
  std::unique_ptr<client::StoreClient> globex = Client(kGlobex);
  std::vector<client::PutPage> pages;
  for (uint64_t n = 1; n <= 3; ++n) pages.push_back(PageOf(n, 'a'));
  ASSERT_TRUE(acme->BatchPut(pages).ok());
  ASSERT_TRUE(globex->BatchPut({PageOf(1, 'g')}).ok());
  ASSERT_TRUE(acme->Pin({KeyOf(1)}, 600'000).ok());
  ASSERT_TRUE(acme->Pin({KeyOf(2)}, 600'000).ok());
  const absl::Status refused = acme->Pin({KeyOf(3)}, 600'000).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("tenant_max_pins"));
  EXPECT_TRUE(globex->Pin({KeyOf(1)}, 600'000).ok());
  EXPECT_EQ(Client(kOps)->Stats()->active_pins(), 3u);
}

// The entry Stats gives `tenant`; fails the test when there is none.
v1::TenantStats TenantIn(const v1::StatsResponse& stats, const std::string& tenant) {
  for (const v1::TenantStats& t : stats.tenants()) {
    if (t.tenant() == tenant) return t;
  }
  ADD_FAILURE() << "no tenant " << tenant << " in " << stats.DebugString();
  return v1::TenantStats();
}

// Byte quotas: acme's own from the access file, the server's default for
// the others; each tenant's put makes room from its own pages or is
// refused alone; Stats shows each tenant by name; a reload changes them.
TEST_F(TenancyTest, ByteQuotasHoldEachTenantAloneAndFollowTheAccessFile) {
  constexpr uint64_t kSlot = 4096;  // a page of Layout() takes the smallest RAM slot
  auto acme_line = [](const std::string& quotas) {
    return absl::StrCat("tenant=acme role=tenant token_sha256=", access::HashToken(kAcme), " ",
                        quotas, "\n");
  };
  WriteAccess(acme_line(absl::StrCat("max_ram_bytes=", 2 * kSlot, " max_pins=1")) +
              Line("globex", "tenant", kGlobex) + Line("ops", "admin", kOps, "write"));
  ASSERT_NO_FATAL_FAILURE(Start({absl::StrCat("--tenant_max_ram_bytes=", 4 * kSlot)}));
  std::unique_ptr<client::StoreClient> acme = Client(kAcme);
  std::unique_ptr<client::StoreClient> globex = Client(kGlobex);
  for (uint64_t n = 1; n <= 3; ++n) ASSERT_TRUE(acme->BatchPut({PageOf(n, 'a')}).ok()) << n;
  absl::StatusOr<std::string> pin = acme->Pin({KeyOf(2), KeyOf(3)}, 600'000);
  ASSERT_TRUE(pin.ok()) << pin.status();
  // acme's RAM holds only pinned pages: its put is refused, globex's are not.
  const absl::Status refused = acme->BatchPut({PageOf(4, 'a')}).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(refused.message()), HasSubstr("RAM quota of 8192 bytes"));
  for (uint64_t n = 1; n <= 4; ++n) ASSERT_TRUE(globex->BatchPut({PageOf(n, 'g')}).ok()) << n;
  ASSERT_TRUE(Client(kOps, /*shared=*/true)->BatchPut({PageOf(9, 's')}).ok());
  absl::StatusOr<client::LookupReply> tiers =
      acme->Lookup({KeyOf(1).hash, KeyOf(2).hash, KeyOf(3).hash, KeyOf(4).hash}, 0, 1);
  ASSERT_TRUE(tiers.ok());
  EXPECT_EQ(tiers->tiers,
            (std::vector<v1::Tier>{v1::TIER_DISK, v1::TIER_RAM, v1::TIER_RAM, v1::TIER_NONE}));

  absl::StatusOr<v1::StatsResponse> stats = Client(kOps)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  ASSERT_EQ(stats->tenants_size(), 3);  // ops stored nothing in its own namespace
  const v1::TenantStats a = TenantIn(*stats, "acme");
  EXPECT_EQ(a.ram_bytes(), 2 * kSlot);
  EXPECT_EQ(a.ram_pages(), 2u);
  EXPECT_EQ(a.disk_bytes(), 3 * Layout().PageBytes());  // one demoted, two written through
  EXPECT_EQ(a.disk_pages(), 3u);
  EXPECT_EQ(a.pins(), 1u);
  EXPECT_EQ(a.pinned_bytes(), 2 * Layout().PageBytes());
  EXPECT_EQ(a.max_ram_bytes(), 2 * kSlot);
  EXPECT_EQ(a.max_disk_bytes(), 0u);
  EXPECT_EQ(a.max_pins(), 1u);
  EXPECT_EQ(a.quota_refusals(), 1u);
  const v1::TenantStats g = TenantIn(*stats, "globex");
  EXPECT_EQ(g.ram_bytes(), 4 * kSlot);
  EXPECT_EQ(g.ram_pages(), 4u);
  EXPECT_EQ(g.max_ram_bytes(), 4 * kSlot);
  EXPECT_EQ(g.max_pins(), (1u << 20) / 4);  // a quarter of max_pins, the default
  EXPECT_EQ(g.quota_refusals(), 0u);
  EXPECT_EQ(TenantIn(*stats, "shared").ram_pages(), 1u);

  // A reload gives acme the default RAM quota, and its put room.
  WriteAccess(acme_line("max_disk_bytes=1048576") + Line("globex", "tenant", kGlobex) +
              Line("ops", "admin", kOps, "write"));
  ASSERT_TRUE(server_->Signal(SIGHUP).ok());
  ASSERT_NO_FATAL_FAILURE(AwaitLog("tenants_with_own_quotas=1"));
  stats = Client(kOps)->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  EXPECT_EQ(TenantIn(*stats, "acme").max_ram_bytes(), 4 * kSlot);
  EXPECT_EQ(TenantIn(*stats, "acme").max_disk_bytes(), 1048576u);
  EXPECT_EQ(TenantIn(*stats, "acme").max_pins(), (1u << 20) / 4);
  ASSERT_TRUE(acme->BatchPut({PageOf(4, 'a')}).ok());
  EXPECT_EQ(TenantIn(*Client(kOps)->Stats(), "acme").ram_pages(), 3u);
}

TEST_F(TenancyTest, AnUnreadableAccessFileStopsTheStart) {
  WriteAccess("tenant=acme role=tenant\n");
  absl::StatusOr<ExitResult> exit = ServerProcess::RunToExit(
      {"--listen=127.0.0.1:0", "--data_dir=" + dir_.path() + "/data", "--noucx",
       "--access_file=" + access_path_},
      dir_.path());
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(exit->exit_code, 2);
  EXPECT_THAT(exit->stderr_text, HasSubstr("access.txt:1"));
}

}  // namespace
}  // namespace kvtier::testing
