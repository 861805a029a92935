// kvtierctl against the real kvtier-server: the demo session the main job
// runs, the put-file/get-file round trip, lookup, and usage errors.
#include <sys/stat.h>
#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "kvstore/access/access_table.h"
#include "testing/server_process.h"

#ifndef KVTIERCTL_PATH
#error "KVTIERCTL_PATH must name the kvtierctl binary"
#endif

namespace kvtier::testing {
namespace {

using ::testing::HasSubstr;

struct CtlResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

// Runs kvtierctl to completion (it has per-RPC deadlines, so it ends).
CtlResult RunCtl(const std::vector<std::string>& args) {
  std::string cmd = KVTIERCTL_PATH;
  for (const std::string& a : args) absl::StrAppend(&cmd, " '", a, "'");
  absl::StrAppend(&cmd, " 2>&1");
  CtlResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return r;
  char buf[4096];
  size_t n = 0;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) r.output.append(buf, n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

class KvtierctlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<ServerProcess>> server =
        ServerProcess::Start({"--data_dir=" + dir_.path() + "/data"}, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    target_ = "--target=" + server_->target();
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::string target_;
};

TEST_F(KvtierctlTest, DemoRunsAndVerifiesEveryPage) {
  CtlResult r = RunCtl({target_, "demo", "--prompt_tokens=256", "--layers=2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("-> 16 pages"));
  EXPECT_THAT(r.output, HasSubstr("lookup before storing: prefix 0 pages"));
  EXPECT_THAT(r.output, HasSubstr("put 32 pages"));
  EXPECT_THAT(r.output, HasSubstr("prefix 16 of 16 pages"));
  EXPECT_THAT(r.output, HasSubstr("reusable prefix 8 pages"));
  EXPECT_THAT(r.output, HasSubstr("got 32 pages back"));
  EXPECT_THAT(r.output, HasSubstr("0 mismatches"));
  EXPECT_THAT(r.output, HasSubstr("FAILED_PRECONDITION"));
  EXPECT_THAT(r.output, HasSubstr("puts 32 (duplicates 0)"));
  // Same seed, same keys: the second session finds everything stored.
  r = RunCtl({target_, "demo", "--prompt_tokens=256", "--layers=2"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("lookup before storing: prefix 16 pages"));
  EXPECT_THAT(r.output, HasSubstr("32 already stored"));
}

TEST_F(KvtierctlTest, PutFileGetFileRoundTrip) {
  const std::string in = dir_.path() + "/in.bin";
  const std::string out = dir_.path() + "/out.bin";
  const std::string manifest = dir_.path() + "/in.manifest";
  std::string content;
  for (int i = 0; i < 200'000; ++i) content.push_back(static_cast<char>(i * 7 + i / 251));
  std::ofstream(in, std::ios::binary) << content;
  CtlResult r = RunCtl({target_, "put-file", in, "--manifest=" + manifest});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // 200000 bytes in 64 KiB pages: 4 pages.
  EXPECT_THAT(r.output, HasSubstr("in 4 pages of 64.0 KiB (4 new, 0 already stored)"));
  r = RunCtl({target_, "get-file", out, "--manifest=" + manifest});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  std::ifstream got(out, std::ios::binary);
  std::stringstream bytes;
  bytes << got.rdbuf();
  EXPECT_EQ(bytes.str(), content);

  r = RunCtl({target_, "stats"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("puts 4 (duplicates 0)"));
  // One line per tenant: here the anonymous one, without quotas.
  EXPECT_THAT(r.output, HasSubstr("tenant anonymous: ram 256.0 KiB of no quota (4 pages)  "
                                  "disk 0.0 B of no quota (0 pages)  pins 0 of no quota"));
}

TEST_F(KvtierctlTest, LookupOfAnUnstoredPromptFindsNoPrefix) {
  CtlResult r = RunCtl({target_, "lookup", "--tokens=1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("17 tokens -> 1 full pages of 16 tokens"));
  EXPECT_THAT(r.output, HasSubstr("stored prefix: 0 of 1 pages"));
}

// events prints the node's pages of the tenant from its cache event
// stream; route finds a stored prompt on the member that holds it.
TEST_F(KvtierctlTest, EventsAndRouteShowWhatTheNodeHolds) {
  std::string tokens = "--tokens=";
  for (int t = 0; t < 50; ++t) absl::StrAppend(&tokens, t == 0 ? "" : ",", t);
  CtlResult r = RunCtl({target_, "events"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("node local holds 0 pages of this tenant"));
  // 50 tokens: 3 full pages of 16, in 2 layers.
  r = RunCtl({target_, "cluster-put", tokens, "--layers=2", "--replicas=1", "--write_quorum=1"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCtl({target_, "events"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("node local holds 6 pages of this tenant"));
  r = RunCtl({target_, "events", "--layer=1"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("node local holds 3 pages of layer 1 of this tenant"));
  r = RunCtl({target_, "route", tokens});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("local            holds the first 3 of 3 pages"));
  r = RunCtl({target_, "route", "--tokens=9,9,9,9,9,9,9,9,9,9,9,9,9,9,9,9"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("no member holds its first page"));
  r = RunCtl({target_, "events", "--layer=-2"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("--layer"));
}

// pin and unpin a stored prompt, bench a round trip, and drain, which a
// node outside a cluster refuses.
TEST_F(KvtierctlTest, PinUnpinBenchAndDrainExitCodes) {
  std::string tokens = "--tokens=";
  for (int t = 0; t < 40; ++t) absl::StrAppend(&tokens, t == 0 ? "" : ",", t);
  CtlResult r = RunCtl({target_, "pin", tokens, "--layers=2"});
  EXPECT_EQ(r.exit_code, 1) << r.output;  // nothing stored yet
  EXPECT_THAT(r.output, HasSubstr("NOT_FOUND"));
  r = RunCtl({target_, "cluster-put", tokens, "--layers=2", "--replicas=1", "--write_quorum=1"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = RunCtl({target_, "pin", tokens, "--layers=2", "--pin_ttl_ms=60000"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("pinned 2 pages x 2 layers for 60000 ms"));
  const size_t at = r.output.find("pin id ");
  ASSERT_NE(at, std::string::npos);
  const std::string id = r.output.substr(at + 7, 32);
  r = RunCtl({target_, "stats"});
  EXPECT_THAT(r.output, HasSubstr("active pins 1"));
  EXPECT_THAT(r.output, HasSubstr("cluster: node local (MEMBER_UP) of 1 members: MEMBER_UP 1"));
  EXPECT_EQ(RunCtl({target_, "unpin", id}).exit_code, 0);
  r = RunCtl({target_, "unpin", id});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("NOT_FOUND"));
  EXPECT_EQ(RunCtl({target_, "unpin", "not-hex"}).exit_code, 2);

  r = RunCtl({target_, "bench", "--bench_ops=4", "--batch_pages=4"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_THAT(r.output, HasSubstr("4 batches of 4 pages of 64.0 KiB"));
  EXPECT_THAT(r.output, HasSubstr("0 pages wrong or missing"));
  EXPECT_EQ(RunCtl({target_, "bench", "--bench_ops=0"}).exit_code, 2);

  r = RunCtl({target_, "drain"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.output, HasSubstr("FAILED_PRECONDITION: this node is not in a cluster"));
}

TEST_F(KvtierctlTest, UsageErrorsExitWithTwo) {
  EXPECT_EQ(RunCtl({target_}).exit_code, 2);
  EXPECT_EQ(RunCtl({target_, "frobnicate"}).exit_code, 2);
  CtlResult r = RunCtl({target_, "lookup"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("needs --tokens or --text"));
  r = RunCtl({target_, "lookup", "--tokens=1,x"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("\"x\" is not a u32"));
  r = RunCtl({target_, "get-file", dir_.path() + "/nothing"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.output, HasSubstr("needs --manifest"));
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// new-token writes a fresh token readable by its owner only and prints the
// access-file line that admits it; that line, in a server's access file,
// lets kvtierctl in with --token_file and no other way.
TEST(KvtierctlTokenTest, NewTokenAdmitsItsHolderAsItsTenantAndRole) {
  TempDir dir;
  const std::string admin_token = dir.path() + "/admin.token";
  const std::string tenant_token = dir.path() + "/acme.token";
  CtlResult admin = RunCtl({"new-token", "ops", admin_token, "--role=admin"});
  ASSERT_EQ(admin.exit_code, 0) << admin.output;
  CtlResult tenant = RunCtl({"new-token", "acme", tenant_token, "--shared=read"});
  ASSERT_EQ(tenant.exit_code, 0) << tenant.output;
  struct stat info;
  ASSERT_EQ(stat(tenant_token.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  const std::string token = ReadAll(tenant_token);
  ASSERT_EQ(token.size(), 65u);  // 64 hex digits and a newline
  const std::string bare = token.substr(0, 64);
  EXPECT_EQ(bare.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_NE(bare, ReadAll(admin_token).substr(0, 64));
  EXPECT_EQ(tenant.output.find(bare), std::string::npos);  // only its hash is printed

  absl::StatusOr<access::AccessTable> table =
      access::AccessTable::Parse(admin.output + tenant.output, "printed");
  ASSERT_TRUE(table.ok()) << table.status();
  const std::optional<access::Identity> found = table->FindToken(bare);
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->tenant, "acme");
  EXPECT_EQ(found->role, access::Role::kTenant);
  EXPECT_EQ(found->shared, access::SharedAccess::kRead);

  // hash-token agrees; an existing file is never overwritten; bad flags
  // are usage errors.
  CtlResult hashed;
  {
    const std::string cmd = absl::StrCat(KVTIERCTL_PATH, " hash-token < '", tenant_token, "'");
    FILE* pipe = popen(cmd.c_str(), "r");
    ASSERT_NE(pipe, nullptr);
    char buf[256];
    size_t n = 0;
    while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) hashed.output.append(buf, n);
    hashed.exit_code = WEXITSTATUS(pclose(pipe));
  }
  EXPECT_EQ(hashed.exit_code, 0);
  EXPECT_EQ(hashed.output, access::HashToken(bare) + "\n");
  EXPECT_EQ(RunCtl({"new-token", "acme", tenant_token}).exit_code, 1);
  EXPECT_EQ(ReadAll(tenant_token), token);
  EXPECT_EQ(RunCtl({"new-token", "acme", dir.path() + "/x", "--role=root"}).exit_code, 2);
  EXPECT_EQ(RunCtl({"new-token", "prom", dir.path() + "/z", "--role=metrics", "--shared=read"})
                .exit_code,
            2);
  CtlResult metrics = RunCtl({"new-token", "prom", dir.path() + "/prom.token", "--role=metrics"});
  ASSERT_EQ(metrics.exit_code, 0) << metrics.output;
  absl::StatusOr<access::AccessTable> with_metrics =
      access::AccessTable::Parse(metrics.output, "printed");
  ASSERT_TRUE(with_metrics.ok()) << with_metrics.status();
  EXPECT_EQ(with_metrics->FindToken(ReadAll(dir.path() + "/prom.token").substr(0, 64))->role,
            access::Role::kMetrics);
  EXPECT_EQ(RunCtl({"new-token", "bad name", dir.path() + "/y"}).exit_code, 2);

  std::ofstream(dir.path() + "/access.txt") << admin.output << tenant.output;
  absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(
      {"--data_dir=" + dir.path() + "/data", "--access_file=" + dir.path() + "/access.txt"},
      dir.path());
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string target = "--target=" + (*server)->target();
  CtlResult stats = RunCtl({target, "--token_file=" + admin_token, "stats"});
  EXPECT_EQ(stats.exit_code, 0) << stats.output;
  stats = RunCtl({target, "--token_file=" + tenant_token, "stats"});
  EXPECT_EQ(stats.exit_code, 1);
  EXPECT_THAT(stats.output, HasSubstr("PERMISSION_DENIED"));
  stats = RunCtl({target, "stats"});
  EXPECT_EQ(stats.exit_code, 1);
  EXPECT_THAT(stats.output, HasSubstr("UNAUTHENTICATED"));
  CtlResult demo = RunCtl({target, "--token_file=" + tenant_token, "demo", "--prompt_tokens=64",
                           "--layers=1"});
  EXPECT_EQ(demo.exit_code, 0) << demo.output;
  EXPECT_THAT(demo.output, HasSubstr("0 mismatches"));
  EXPECT_THAT(demo.output, HasSubstr("store stats need the admin role"));
}

}  // namespace
}  // namespace kvtier::testing
