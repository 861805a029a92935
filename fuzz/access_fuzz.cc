// The access file (kvstore/access): fuzzed text through AccessTable::Parse
// and through a reload of a running AccessControl. Findings beyond crashes:
//   - a refusal that is not INVALID_ARGUMENT, or a reload whose outcome
//     differs from the parse of the same text;
//   - a failed reload that changed the current table or its generation, or
//     a successful one that did not install a new table;
//   - a table that hands out an inconsistent identity (a tenant name that
//     fails validation, a tag that is not its name's, a name its tag does
//     not find, a metrics line with shared rights), a quota override of a
//     tenant the table does not name, or no credential at all;
//   - CR LF line ends or a trailing comment line changing the outcome.
// `@0` .. `@3` in the input stand for the hashes of four known tokens, so
// that mutations reach token lines the harness can then look up.
#include <array>
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <string_view>

#include "absl/strings/str_replace.h"
#include "fuzz/fuzz_util.h"
#include "kvstore/access/access_control.h"
#include "kvstore/access/access_table.h"

namespace {

using ::kvtier::access::AccessControl;
using ::kvtier::access::AccessTable;
using ::kvtier::access::Identity;

constexpr std::array<std::string_view, 4> kTokens = {
    "fuzz-token-zero-0000000", "fuzz-token-one-11111111", "fuzz-token-two-22222222",
    "fuzz-token-three-333333"};

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

void CheckIdentity(const AccessTable& table, const Identity& id) {
  Check(kvtier::access::ValidateTenantName(id.tenant).ok());
  Check(id.tenant_tag == kvtier::access::TenantTag(id.tenant));
  Check(id.tenant_tag != kvtier::access::kAnonymousTag &&
        id.tenant_tag != kvtier::access::kSharedTag);
  const std::optional<std::string_view> name = table.TenantName(id.tenant_tag);
  Check(name.has_value() && *name == id.tenant);
  if (id.role == kvtier::access::Role::kMetrics) {
    Check(id.shared == kvtier::access::SharedAccess::kNone);
  }
}

// Every identity reachable from the text: the known tokens, and each
// cert_cn= value written in it.
void CheckTable(const AccessTable& table, std::string_view text) {
  Check(table.token_count() + table.certificate_count() > 0);
  for (std::string_view token : kTokens) {
    if (std::optional<Identity> id = table.FindToken(token); id.has_value()) {
      CheckIdentity(table, *id);
    }
  }
  // Not a valid token (too short): never found, whatever the table holds.
  Check(!table.FindToken("short").has_value());
  constexpr std::string_view kCn = "cert_cn=";
  for (size_t at = text.find(kCn); at != std::string_view::npos; at = text.find(kCn, at + 1)) {
    const size_t begin = at + kCn.size();
    const size_t end = text.find_first_of(" \t\r\n#", begin);
    const std::string_view cn =
        text.substr(begin, end == std::string_view::npos ? end : end - begin);
    if (std::optional<Identity> id = table.FindCertificate(cn); id.has_value()) {
      CheckIdentity(table, *id);
    }
  }
  for (const auto& [tag, quotas] : table.quota_overrides()) {
    Check(table.TenantName(tag).has_value());
    Check(quotas.max_ram_bytes || quotas.max_disk_bytes || quotas.max_pins ||
          quotas.max_pinned_bytes);
  }
}

AccessControl& Control(const std::string& path) {
  static AccessControl* const control = [&path] {
    std::ofstream(path, std::ios::trunc)
        << "tenant=base role=tenant token_sha256=" << kvtier::access::HashToken(kTokens[0])
        << "\n";
    absl::StatusOr<std::unique_ptr<AccessControl>> opened = AccessControl::Open(path);
    Check(opened.ok());
    return opened->release();
  }();
  return *control;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  text = absl::StrReplaceAll(text, {{"@0", kvtier::access::HashToken(kTokens[0])},
                                    {"@1", kvtier::access::HashToken(kTokens[1])},
                                    {"@2", kvtier::access::HashToken(kTokens[2])},
                                    {"@3", kvtier::access::HashToken(kTokens[3])}});
  const absl::StatusOr<AccessTable> table = AccessTable::Parse(text, "fuzz");
  if (table.ok()) {
    CheckTable(*table, text);
  } else {
    Check(table.status().code() == absl::StatusCode::kInvalidArgument);
  }

  // Line ends and comment lines are not content.
  if (text.find('\r') == std::string::npos) {
    const std::string crlf = absl::StrReplaceAll(text, {{"\n", "\r\n"}});
    Check(AccessTable::Parse(crlf, "fuzz").ok() == table.ok());
  }
  if (text.empty() || text.back() == '\n') {
    Check(AccessTable::Parse(text + "# a comment\n", "fuzz").ok() == table.ok());
  }

  // The same text as a reload of a running control.
  static const std::string path = kvtier::fuzz::ScratchDir("access") + "/access.txt";
  AccessControl& control = Control(path);
  uint64_t before_generation = 0;
  const std::shared_ptr<const AccessTable> before = control.Current(&before_generation);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  const absl::Status reloaded = control.Reload();
  uint64_t after_generation = 0;
  const std::shared_ptr<const AccessTable> after = control.Current(&after_generation);
  // A file over 1 MiB (Load's limit) is refused before it is parsed.
  constexpr size_t kMaxFileBytes = size_t{1} << 20;
  Check(reloaded.code() == (text.size() > kMaxFileBytes ? absl::StatusCode::kInvalidArgument
                                                        : table.status().code()));
  if (reloaded.ok()) {
    Check(after_generation == before_generation + 1 && after != before);
    Check(!control.IsCurrent(before_generation) && control.IsCurrent(after_generation));
  } else {
    Check(after_generation == before_generation && after == before);
    Check(control.IsCurrent(before_generation));
  }
  return 0;
}
