#include "kvstore/access/access_table.h"

#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvtier::access {

// Readable failures (found by ADL, so outside the anonymous namespace).
void PrintTo(const Identity& identity, std::ostream* out) {
  *out << "{" << identity.tenant << ", tag " << std::hex << identity.tenant_tag << std::dec
       << ", role " << static_cast<int>(identity.role) << ", shared "
       << static_cast<int>(identity.shared) << "}";
}

namespace {

// Tokens and their SHA-256, from `printf '%s' TOKEN | sha256sum`.
constexpr char kAcmeToken[] = "acme-token-0123456789";
constexpr char kAcmeHash[] = "2e032a402ed5f8d5e361fb26c6dde881f66772bbd4ae216810ca28d5d6fd2c37";
constexpr char kAcmeRotatedToken[] = "acme-token-rotated-9876";
constexpr char kAcmeRotatedHash[] =
    "fa7e62f8357647b00762450ffb6cdfa04edd02fbb6af83797baf0d3ad3e62c93";
constexpr char kOpsToken[] = "ops-admin-token-ABCDEFGH";
constexpr char kOpsHash[] = "30a85b4eae9297ac062b552a18d0129f4024607c152a96b7c5c852722e9a1239";
constexpr char kWriterToken[] = "shared-writer-token-xyz!";
constexpr char kWriterHash[] = "9c6ee9f730d7783ce0edcd48f1da421326780d514be6bafb6e6a6532e95d1c19";
// Hashes of tokens that ValidateToken refuses: "", "short-token" and
// "has space-token-0123".
constexpr char kEmptyHash[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
constexpr char kShortHash[] = "9e4dfc4565c18f77be8d9e7926cabaaf3a0bdc8cfa10275cf4a1d748047a59f6";
constexpr char kSpaceHash[] = "4ef12245923e7dd666c4ce60c65190544ffcfbbad93591f57de1555b4b2fd9a4";

// From `printf 'kvtier.tenant.v1\0acme' | sha256sum` (33d2c3960d065bed...).
constexpr uint64_t kAcmeTag = 0x33d2c3960d065bedULL;
constexpr uint64_t kOpsTag = 0x6864e2e7e2aec878ULL;

Identity Acme(Role role, SharedAccess shared) { return {"acme", kAcmeTag, role, shared}; }

TEST(TenantTagTest, IsTheFirstEightBytesOfTheDomainSeparatedHash) {
  EXPECT_EQ(TenantTag("acme"), kAcmeTag);
  EXPECT_EQ(TenantTag("ops"), kOpsTag);
  for (std::string name : {"acme", "ops", "a", "tenant-with.many_chars-0123456789"}) {
    std::string input = "kvtier.tenant.v1";
    ASSERT_EQ(input.size(), 16u);
    input.push_back('\0');
    input += name;
    unsigned char digest[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
    uint64_t expected = 0;
    for (int i = 0; i < 8; ++i) expected = (expected << 8) | digest[i];
    EXPECT_EQ(TenantTag(name), expected) << name;
  }
  EXPECT_NE(TenantTag("acme"), TenantTag("Acme"));
  EXPECT_EQ(kAnonymousTag, 0u);
  EXPECT_EQ(kSharedTag, UINT64_MAX);
}

TEST(HashTokenTest, MatchesSha256sum) {
  EXPECT_EQ(HashToken(kAcmeToken), absl::StrCat("sha256:", kAcmeHash));
  EXPECT_EQ(HashToken(kOpsToken), absl::StrCat("sha256:", kOpsHash));
  EXPECT_EQ(HashToken(""), absl::StrCat("sha256:", kEmptyHash));
}

TEST(ValidateTenantNameTest, AcceptsThePatternOnly) {
  for (std::string name : {std::string("a"), std::string("Z"), std::string("7"),
                           std::string("Acme.prod_eu-1"), std::string(64, 'x')}) {
    EXPECT_TRUE(ValidateTenantName(name).ok()) << name;
  }
  for (std::string name :
       {std::string(), std::string("-acme"), std::string(".acme"), std::string("_acme"),
        std::string("acme corp"), std::string("acme/x"), std::string("acme:x"),
        std::string("caf\xc3\xa9"), std::string("a\0b", 3), std::string(65, 'x')}) {
    const absl::Status status = ValidateTenantName(name);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << name;
  }
  EXPECT_EQ(ValidateTenantName("acme corp").message(),
            "tenant name \"acme corp\" does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}");
}

TEST(ValidateTokenTest, SixteenToFourKiBytesOfVisibleAscii) {
  EXPECT_TRUE(ValidateToken(std::string(16, '!')).ok());
  EXPECT_TRUE(ValidateToken(std::string(4096, '~')).ok());
  EXPECT_TRUE(ValidateToken(kWriterToken).ok());
  for (std::string token :
       {std::string(), std::string(15, 'a'), std::string(4097, 'a'),
        std::string("has space-token-0123"), std::string("tab\ttoken-0123456"),
        std::string("del\x7ftoken-0123456"), std::string("nul-token-01234\0", 16),
        std::string("caf\xc3\xa9-token-0123456")}) {
    EXPECT_EQ(ValidateToken(token).code(), absl::StatusCode::kInvalidArgument) << token;
  }
  // Errors never quote the secret.
  const absl::Status status = ValidateToken("has space-token-0123");
  EXPECT_EQ(status.message(), "a token is printable ASCII without spaces (bytes 0x21..0x7e)");
  EXPECT_EQ(ValidateToken("short-token").message(), "a token is 16..4096 bytes, not 11");
}

std::string ValidFile() {
  // One line of the file per line here.
  // clang-format off
  return absl::StrCat(
      "# tenant     role          credential   shared\n",
      "\n",
      "tenant=acme  role=tenant   token_sha256=", kAcmeHash, "   shared=read\n",
      "   # rotation: the new token beside the old one\n",
      "tenant=acme\trole=admin\ttoken_sha256=sha256:", kAcmeRotatedHash, "  # admin for now\n",
      "tenant=ops role=admin cert_cn=ops-client.example.com\r\n",
      "\t \n",
      "shared=write tenant=writer role=tenant token_sha256=", kWriterHash, "\n",
      "tenant=ops role=admin token_sha256=", kOpsHash, "\n",
      "tenant=acme role=tenant cert_cn=CN=acme,O=Acme shared=none\n");
  // clang-format on
}

TEST(AccessTableTest, ParsesAValidFileAndFindsEachCredential) {
  absl::StatusOr<AccessTable> table = AccessTable::Parse(ValidFile(), "access.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->token_count(), 4u);
  EXPECT_EQ(table->certificate_count(), 2u);

  EXPECT_EQ(table->FindToken(kAcmeToken), Acme(Role::kTenant, SharedAccess::kRead));
  EXPECT_EQ(table->FindToken(kAcmeRotatedToken), Acme(Role::kAdmin, SharedAccess::kNone));
  EXPECT_EQ(table->FindToken(kOpsToken),
            (Identity{"ops", kOpsTag, Role::kAdmin, SharedAccess::kNone}));
  EXPECT_EQ(table->FindToken(kWriterToken),
            (Identity{"writer", TenantTag("writer"), Role::kTenant, SharedAccess::kWrite}));

  EXPECT_EQ(table->FindCertificate("ops-client.example.com"),
            (Identity{"ops", kOpsTag, Role::kAdmin, SharedAccess::kNone}));
  EXPECT_EQ(table->FindCertificate("CN=acme,O=Acme"), Acme(Role::kTenant, SharedAccess::kNone));
}

TEST(AccessTableTest, FindTokenRefusesWrongEmptyAndInvalidTokens) {
  // The hashes of refused tokens are in the file: only ValidateToken stops them.
  const std::string text =
      absl::StrCat(ValidFile(), "tenant=bad role=admin token_sha256=", kEmptyHash, "\n",
                   "tenant=bad role=admin token_sha256=", kShortHash, "\n",
                   "tenant=bad role=admin token_sha256=", kSpaceHash, "\n");
  absl::StatusOr<AccessTable> table = AccessTable::Parse(text, "access.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->token_count(), 7u);
  EXPECT_EQ(table->FindToken(""), std::nullopt);
  EXPECT_EQ(table->FindToken("short-token"), std::nullopt);
  EXPECT_EQ(table->FindToken("has space-token-0123"), std::nullopt);
  EXPECT_EQ(table->FindToken("acme-token-012345678"), std::nullopt);    // a prefix
  EXPECT_EQ(table->FindToken("acme-token-0123456789x"), std::nullopt);  // an extension
  EXPECT_EQ(table->FindToken("ACME-TOKEN-0123456789"), std::nullopt);
  EXPECT_EQ(table->FindToken(kAcmeHash), std::nullopt);  // the hash is no token
  EXPECT_EQ(table->FindToken(HashToken(kAcmeToken)), std::nullopt);
  EXPECT_EQ(table->FindToken("ops-client.example.com"), std::nullopt);  // a cert name
  EXPECT_EQ(table->FindToken(kOpsToken)->tenant, "ops");
}

TEST(AccessTableTest, AMetricsCredentialIsItsOwnRole) {
  absl::StatusOr<AccessTable> table = AccessTable::Parse(
      absl::StrCat("tenant=prom role=metrics token_sha256=", kOpsHash, "\n"), "access.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  const std::optional<Identity> prom = table->FindToken(kOpsToken);
  ASSERT_TRUE(prom.has_value());
  EXPECT_EQ(prom->tenant, "prom");
  EXPECT_EQ(prom->role, Role::kMetrics);
  EXPECT_EQ(prom->shared, SharedAccess::kNone);
}

TEST(AccessTableTest, FindCertificateMatchesTheExactName) {
  absl::StatusOr<AccessTable> table = AccessTable::Parse(ValidFile(), "access.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->FindCertificate(""), std::nullopt);
  EXPECT_EQ(table->FindCertificate("OPS-CLIENT.example.com"), std::nullopt);
  EXPECT_EQ(table->FindCertificate("ops-client.example.com."), std::nullopt);
  EXPECT_EQ(table->FindCertificate(kAcmeToken), std::nullopt);
  EXPECT_EQ(table->FindCertificate(kAcmeHash), std::nullopt);
  EXPECT_EQ(table->FindCertificate("ops-client.example.com")->role, Role::kAdmin);
}

TEST(AccessTableTest, HashTokenOutputIsAValidValue) {
  const std::string token(4096, 'k');
  absl::StatusOr<AccessTable> table = AccessTable::Parse(
      absl::StrCat("tenant=k role=tenant token_sha256=", HashToken(token)), "inline");
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->FindToken(token),
            (Identity{"k", TenantTag("k"), Role::kTenant, SharedAccess::kNone}));
}

TEST(AccessTableTest, LinesOfExactlyFourKiBAreAllowed) {
  std::string line = absl::StrCat("tenant=acme role=tenant token_sha256=", kAcmeHash, " #");
  line.resize(4096, '-');
  EXPECT_TRUE(AccessTable::Parse(line + "\r\n", "access.txt").ok());
  EXPECT_EQ(AccessTable::Parse(line + "-\n", "access.txt").status().message(),
            "access.txt:1: line longer than 4096 bytes");
}

struct BadFile {
  std::string text;
  std::string message;
};

TEST(AccessTableTest, EveryMistakeIsInvalidArgumentNamingItsLine) {
  const std::string acme = absl::StrCat("tenant=acme role=tenant token_sha256=", kAcmeHash, "\n");
  const std::string ops = absl::StrCat("tenant=ops role=admin token_sha256=", kOpsHash);
  const std::vector<BadFile> cases = {
      {"# only a comment\n\n", "access.txt: no credentials"},
      {"", "access.txt: no credentials"},
      {acme + ops + " colour=blue", "access.txt:2: unknown key \"colour\""},
      {acme + "# c\n" + ops + " =x", "access.txt:3: unknown key \"\""},
      {acme + ops + " role=tenant", "access.txt:2: key role given twice"},
      {acme + ops + " tenant", "access.txt:2: field \"tenant\" has no '='"},
      {absl::StrCat("role=admin token_sha256=", kOpsHash), "access.txt:1: missing tenant="},
      {absl::StrCat("tenant=ops token_sha256=", kOpsHash), "access.txt:1: missing role="},
      {absl::StrCat("tenant=-ops role=admin token_sha256=", kOpsHash),
       "access.txt:1: tenant name \"-ops\" does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"},
      {absl::StrCat("tenant= role=admin token_sha256=", kOpsHash),
       "access.txt:1: tenant name \"\" does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"},
      {absl::StrCat("tenant=ops role=root token_sha256=", kOpsHash),
       "access.txt:1: role is tenant, admin or metrics, not \"root\""},
      {acme + ops + " shared=all", "access.txt:2: shared is none, read or write, not \"all\""},
      {absl::StrCat("tenant=prom role=metrics shared=read token_sha256=", kOpsHash),
       "access.txt:1: a metrics credential holds no pages: no shared= or quota"},
      {absl::StrCat("tenant=prom role=metrics max_pins=3 token_sha256=", kOpsHash),
       "access.txt:1: a metrics credential holds no pages: no shared= or quota"},
      {"tenant=ops role=admin token_sha256=" + std::string(63, 'a'),
       "access.txt:1: token_sha256 is 64 lowercase hex digits, bare or after \"sha256:\""},
      {"tenant=ops role=admin token_sha256=" + std::string(64, 'A'),
       "access.txt:1: token_sha256 is 64 lowercase hex digits, bare or after \"sha256:\""},
      {"tenant=ops role=admin token_sha256=" + std::string(64, 'g'),
       "access.txt:1: token_sha256 is 64 lowercase hex digits, bare or after \"sha256:\""},
      {absl::StrCat("tenant=ops role=admin token_sha256=sha1:", kOpsHash),
       "access.txt:1: token_sha256 is 64 lowercase hex digits, bare or after \"sha256:\""},
      {"tenant=ops role=admin cert_cn=",
       "access.txt:1: cert_cn is 1..255 bytes of printable ASCII without spaces"},
      {"tenant=ops role=admin cert_cn=" + std::string(256, 'c'),
       "access.txt:1: cert_cn is 1..255 bytes of printable ASCII without spaces"},
      {"tenant=ops role=admin cert_cn=caf\xc3\xa9",
       "access.txt:1: cert_cn is 1..255 bytes of printable ASCII without spaces"},
      {ops + " cert_cn=ops.example.com",
       "access.txt:1: both token_sha256= and cert_cn=: one credential per line"},
      {acme + "tenant=ops role=admin shared=read",
       "access.txt:2: no credential: give token_sha256= or cert_cn="},
      // The same hash twice, once in each form.
      {absl::StrCat(acme, "\n", "tenant=other role=admin token_sha256=sha256:", kAcmeHash),
       "access.txt:3: token_sha256 repeats line 1"},
      {"tenant=ops role=admin cert_cn=a.example\ntenant=acme role=tenant cert_cn=a.example",
       "access.txt:2: cert_cn \"a.example\" repeats line 1"},
  };
  for (const BadFile& bad : cases) {
    const absl::StatusOr<AccessTable> table = AccessTable::Parse(bad.text, "access.txt");
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument) << bad.text;
    EXPECT_EQ(table.status().message(), bad.message) << bad.text;
  }
}

TEST(AccessTableTest, QuotasAreTheTenantsAcrossItsLines) {
  absl::StatusOr<AccessTable> table = AccessTable::Parse(
      absl::StrCat("tenant=acme role=tenant token_sha256=", kAcmeHash,
                   " max_ram_bytes=1048576 max_pins=0\n",
                   // Another line of acme: the same value again, and a key of its own.
                   "tenant=acme role=admin cert_cn=acme max_ram_bytes=1048576 "
                   "max_disk_bytes=18446744073709551615\n",
                   "tenant=ops role=admin token_sha256=", kOpsHash, "\n",
                   "tenant=writer role=tenant cert_cn=w max_pins=4294967295 "
                   "max_pinned_bytes=0012  # leading zeros are decimal too\n"),
      "access.txt");
  ASSERT_TRUE(table.ok()) << table.status();
  const auto& quotas = table->quota_overrides();
  ASSERT_EQ(quotas.size(), 2u);  // ops gives none
  TenantQuotaOverrides acme;
  acme.max_ram_bytes = 1048576;
  acme.max_disk_bytes = UINT64_MAX;
  acme.max_pins = 0;
  EXPECT_EQ(quotas.at(kAcmeTag), acme);
  TenantQuotaOverrides writer;
  writer.max_pins = UINT32_MAX;
  writer.max_pinned_bytes = 12;
  EXPECT_EQ(quotas.at(TenantTag("writer")), writer);
  EXPECT_EQ(table->TenantName(kAcmeTag), "acme");
  EXPECT_EQ(table->TenantName(kOpsTag), "ops");
  EXPECT_EQ(table->TenantName(TenantTag("nobody")), std::nullopt);
}

TEST(AccessTableTest, EveryQuotaMistakeIsInvalidArgumentNamingItsLine) {
  const std::string acme = absl::StrCat("tenant=acme role=tenant token_sha256=", kAcmeHash);
  const std::string ops = absl::StrCat("tenant=ops role=admin token_sha256=", kOpsHash);
  const std::vector<BadFile> cases = {
      {acme + " max_ram_bytes=",
       "access.txt:1: max_ram_bytes is a decimal number of at most 18446744073709551615, not "
       "\"\""},
      {acme + " max_ram_bytes=-1",
       "access.txt:1: max_ram_bytes is a decimal number of at most 18446744073709551615, not "
       "\"-1\""},
      {acme + " max_disk_bytes=+5",
       "access.txt:1: max_disk_bytes is a decimal number of at most 18446744073709551615, not "
       "\"+5\""},
      {acme + " max_disk_bytes=1e9",
       "access.txt:1: max_disk_bytes is a decimal number of at most 18446744073709551615, not "
       "\"1e9\""},
      {acme + " max_pinned_bytes=18446744073709551616",
       "access.txt:1: max_pinned_bytes is a decimal number of at most 18446744073709551615, "
       "not \"18446744073709551616\""},
      {acme + " max_pins=4294967296",
       "access.txt:1: max_pins is a decimal number of at most 4294967295, not \"4294967296\""},
      {acme + " max_pins=1 max_pins=1", "access.txt:1: key max_pins given twice"},
      {acme + " max_ram_bytes=1048576\n" + ops + "\n" +
           "tenant=acme role=tenant cert_cn=acme max_ram_bytes=2097152",
       "access.txt:3: max_ram_bytes=2097152 disagrees with line 1 of tenant \"acme\" "
       "(max_ram_bytes=1048576)"},
      {acme + " max_pins=0\ntenant=acme role=tenant cert_cn=acme max_pins=1",
       "access.txt:2: max_pins=1 disagrees with line 1 of tenant \"acme\" (max_pins=0)"},
  };
  for (const BadFile& bad : cases) {
    const absl::StatusOr<AccessTable> table = AccessTable::Parse(bad.text, "access.txt");
    EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument) << bad.text;
    EXPECT_EQ(table.status().message(), bad.message) << bad.text;
  }
}

// Tags SHA-256 never gives in practice, from a stand-in tag function.
uint64_t ReservedTags(std::string_view name) {
  if (name == "zero") return kAnonymousTag;
  if (name == "max") return kSharedTag;
  return TenantTag(name);
}
uint64_t OneTagForAll(std::string_view) { return 42; }

TEST(AccessTableTest, ReservedAndCollidingTagsAreRefused) {
  const std::string ops = absl::StrCat("tenant=ops role=admin token_sha256=", kOpsHash, "\n");
  absl::StatusOr<AccessTable> table = internal::ParseWithTagFunction(
      ops + "tenant=zero role=tenant cert_cn=z", "access.txt", &ReservedTags);
  EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.status().message(), "access.txt:2: tenant \"zero\" has the reserved tag 0");
  table = internal::ParseWithTagFunction(ops + "tenant=max role=tenant cert_cn=m", "access.txt",
                                         &ReservedTags);
  EXPECT_EQ(table.status().message(),
            "access.txt:2: tenant \"max\" has the reserved tag ffffffffffffffff");
  // One tenant on several lines shares its tag with itself only.
  table = internal::ParseWithTagFunction(
      ops + "tenant=ops role=tenant cert_cn=o\n" + "tenant=acme role=tenant cert_cn=a",
      "access.txt", &OneTagForAll);
  EXPECT_EQ(table.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table.status().message(),
            "access.txt:3: tenants \"ops\" and \"acme\" have the same tag 2a");
}

// A fresh file path under the test's temporary directory.
std::string TempPath(std::string_view name) {
  return absl::StrCat(testing::TempDir(), "/access_table_test_", getpid(), "_",
                      absl::string_view(name.data(), name.size()));
}

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

TEST(AccessTableLoadTest, ReadsAFileAndNamesItInErrors) {
  const std::string path = TempPath("valid.txt");
  WriteFile(path, ValidFile());
  absl::StatusOr<AccessTable> table = AccessTable::Load(path);
  ASSERT_TRUE(table.ok()) << table.status();
  EXPECT_EQ(table->FindToken(kAcmeToken), Acme(Role::kTenant, SharedAccess::kRead));
  WriteFile(path, "tenant=acme\n");
  EXPECT_EQ(AccessTable::Load(path).status(),
            absl::InvalidArgumentError(absl::StrCat(path, ":1: missing role=")));
  unlink(path.c_str());
}

TEST(AccessTableLoadTest, AMissingFileIsNotFound) {
  const std::string path = TempPath("missing.txt");
  const absl::Status status = AccessTable::Load(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(status.message(),
            absl::StrCat("cannot open access file ", path, ": No such file or directory"));
}

TEST(AccessTableLoadTest, ADirectoryOrFifoIsFailedPrecondition) {
  const std::string dir = TempPath("dir");
  ASSERT_EQ(mkdir(dir.c_str(), 0700), 0);
  const absl::Status status = AccessTable::Load(dir).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(status.message(), absl::StrCat("access file ", dir, " is not a regular file"));
  rmdir(dir.c_str());
  // A FIFO without a writer is refused at once, not waited on.
  const std::string fifo = TempPath("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_EQ(AccessTable::Load(fifo).status().code(), absl::StatusCode::kFailedPrecondition);
  unlink(fifo.c_str());
}

TEST(AccessTableLoadTest, OneMiBIsTheLargestFile) {
  const std::string entry = absl::StrCat("tenant=acme role=tenant token_sha256=", kAcmeHash, "\n");
  std::string text = entry;
  const std::string comment = absl::StrCat("#", std::string(1022, '.'), "\n");  // 1024 bytes
  while (text.size() + comment.size() <= (size_t{1} << 20)) text += comment;
  text.resize(size_t{1} << 20, '\n');
  const std::string path = TempPath("big.txt");
  WriteFile(path, text);
  EXPECT_TRUE(AccessTable::Load(path).ok());
  WriteFile(path, text + "\n");
  const absl::Status status = AccessTable::Load(path).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(status.message(), absl::StrCat("access file ", path, " is larger than 1 MiB"));
  unlink(path.c_str());
}

}  // namespace
}  // namespace kvtier::access
