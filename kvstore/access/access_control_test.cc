#include "kvstore/access/access_control.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvtier::access {
namespace {

// Tokens and their SHA-256, from `printf '%s' TOKEN | sha256sum`.
constexpr char kOldToken[] = "acme-token-0123456789";
constexpr char kOldHash[] = "2e032a402ed5f8d5e361fb26c6dde881f66772bbd4ae216810ca28d5d6fd2c37";
constexpr char kNewToken[] = "acme-token-rotated-9876";
constexpr char kNewHash[] = "fa7e62f8357647b00762450ffb6cdfa04edd02fbb6af83797baf0d3ad3e62c93";

std::string FileWith(const char* hash, const char* role) {
  return absl::StrCat("tenant=acme role=", role, " token_sha256=", hash, "\n");
}

// A fresh file path under the test's temporary directory.
std::string TempPath(std::string_view name) {
  return absl::StrCat(testing::TempDir(), "/access_control_test_", getpid(), "_",
                      absl::string_view(name.data(), name.size()));
}

// Writes a whole file at once (write aside, then rename), as an operator's
// editor or config manager should, so a concurrent reader sees old or new.
void ReplaceFile(const std::string& path, const std::string& text) {
  const std::string aside = path + ".new";
  {
    std::ofstream out(aside, std::ios::binary | std::ios::trunc);
    out << text;
    ASSERT_TRUE(out.good()) << aside;
  }
  ASSERT_EQ(std::rename(aside.c_str(), path.c_str()), 0) << path;
}

TEST(AccessControlTest, OpenNeedsALoadableFile) {
  const std::string path = TempPath("open.txt");
  absl::StatusOr<std::unique_ptr<AccessControl>> access = AccessControl::Open(path);
  EXPECT_EQ(access.status().code(), absl::StatusCode::kNotFound);
  ReplaceFile(path, "tenant=acme role=tenant\n");
  access = AccessControl::Open(path);
  EXPECT_EQ(access.status(), absl::InvalidArgumentError(absl::StrCat(
                                 path, ":1: no credential: give token_sha256= or cert_cn=")));
  ReplaceFile(path, FileWith(kOldHash, "tenant"));
  access = AccessControl::Open(path);
  ASSERT_TRUE(access.ok()) << access.status();
  EXPECT_EQ((*access)->path(), path);
  ASSERT_NE((*access)->Current(), nullptr);
  EXPECT_EQ((*access)->Current()->FindToken(kOldToken)->role, Role::kTenant);
  unlink(path.c_str());
}

TEST(AccessControlTest, ReloadSwitchesTokensAndKeepsSnapshots) {
  const std::string path = TempPath("reload.txt");
  ReplaceFile(path, FileWith(kOldHash, "tenant"));
  absl::StatusOr<std::unique_ptr<AccessControl>> access = AccessControl::Open(path);
  ASSERT_TRUE(access.ok()) << access.status();
  uint64_t generation = 99;
  const std::shared_ptr<const AccessTable> before = (*access)->Current(&generation);
  EXPECT_EQ(generation, 0u);
  EXPECT_TRUE((*access)->IsCurrent(0));

  ReplaceFile(path, FileWith(kNewHash, "admin"));
  ASSERT_TRUE((*access)->Reload().ok());
  const std::shared_ptr<const AccessTable> after = (*access)->Current(&generation);
  EXPECT_EQ(generation, 1u);
  EXPECT_FALSE((*access)->IsCurrent(0));
  EXPECT_TRUE((*access)->IsCurrent(1));
  EXPECT_NE(after, before);
  EXPECT_EQ(after->FindToken(kOldToken), std::nullopt);
  EXPECT_EQ(after->FindToken(kNewToken),
            (Identity{"acme", TenantTag("acme"), Role::kAdmin, SharedAccess::kNone}));
  // The snapshot taken before is still whole and unchanged.
  EXPECT_EQ(before->token_count(), 1u);
  EXPECT_EQ(before->FindToken(kOldToken),
            (Identity{"acme", TenantTag("acme"), Role::kTenant, SharedAccess::kNone}));
  EXPECT_EQ(before->FindToken(kNewToken), std::nullopt);
  unlink(path.c_str());
}

TEST(AccessControlTest, AFailedReloadKeepsThePreviousTable) {
  const std::string path = TempPath("damaged.txt");
  ReplaceFile(path, FileWith(kOldHash, "tenant"));
  absl::StatusOr<std::unique_ptr<AccessControl>> access = AccessControl::Open(path);
  ASSERT_TRUE(access.ok()) << access.status();
  const std::shared_ptr<const AccessTable> before = (*access)->Current();

  // Half a line, as a crashed editor might leave it.
  ReplaceFile(path, absl::StrCat(FileWith(kNewHash, "tenant"), "tenant=acme role=adm"));
  EXPECT_EQ((*access)->Reload(), absl::InvalidArgumentError(absl::StrCat(
                                     path, ":2: role is tenant, admin or metrics, not \"adm\"")));
  EXPECT_EQ((*access)->Current(), before);
  EXPECT_EQ((*access)->Current()->FindToken(kOldToken)->tenant, "acme");
  EXPECT_EQ((*access)->Current()->FindToken(kNewToken), std::nullopt);

  unlink(path.c_str());
  EXPECT_EQ((*access)->Reload().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*access)->Current(), before);
  // What the table granted stays granted while it stays.
  EXPECT_TRUE((*access)->IsCurrent(0));

  ReplaceFile(path, FileWith(kNewHash, "tenant"));
  EXPECT_TRUE((*access)->Reload().ok());
  EXPECT_FALSE((*access)->IsCurrent(0));
  EXPECT_EQ((*access)->Current()->FindToken(kOldToken), std::nullopt);
  EXPECT_EQ((*access)->Current()->FindToken(kNewToken)->tenant, "acme");
  unlink(path.c_str());
}

TEST(AccessControlTest, ConcurrentReadersSeeOneWholeTableAtATime) {
  const std::string path = TempPath("concurrent.txt");
  ReplaceFile(path, FileWith(kOldHash, "tenant"));
  absl::StatusOr<std::unique_ptr<AccessControl>> access = AccessControl::Open(path);
  ASSERT_TRUE(access.ok()) << access.status();
  AccessControl& control = **access;

  std::atomic<bool> done{false};
  std::atomic<int> torn{0};
  std::atomic<int> failed_reloads{0};
  std::atomic<int> reads{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      // Each snapshot holds exactly one of the two tokens.
      while (!done.load()) {
        const std::shared_ptr<const AccessTable> table = control.Current();
        const bool has_old = table->FindToken(kOldToken).has_value();
        const bool has_new = table->FindToken(kNewToken).has_value();
        if (has_old == has_new || table->token_count() != 1) ++torn;
        ++reads;
      }
    });
  }
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 100; ++i) {
        if (!control.Reload().ok()) ++failed_reloads;
      }
    });
  }
  for (int i = 0; i < 100; ++i) {
    ReplaceFile(path, FileWith(i % 2 == 0 ? kNewHash : kOldHash, "tenant"));
  }
  ReplaceFile(path, FileWith(kNewHash, "admin"));
  for (size_t t = 4; t < threads.size(); ++t) threads[t].join();
  // Reloads are serialized: once the last file is in place, one more reload
  // makes it current whatever the others did.
  ASSERT_TRUE(control.Reload().ok());
  done = true;
  for (size_t t = 0; t < 4; ++t) threads[t].join();

  EXPECT_EQ(torn.load(), 0);
  EXPECT_EQ(failed_reloads.load(), 0);
  EXPECT_GT(reads.load(), 0);
  EXPECT_EQ(control.Current()->FindToken(kNewToken)->role, Role::kAdmin);
  unlink(path.c_str());
}

}  // namespace
}  // namespace kvtier::access
