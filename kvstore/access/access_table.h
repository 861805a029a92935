// The server's access table: who may call the store, as which tenant, with
// which role. Built once from an access file and immutable after; share it
// as std::shared_ptr<const AccessTable> (AccessControl holds the current one
// and swaps it on reload).
//
// Access file format. Text, one credential per line. `#` starts a comment
// (a whole line, or after the fields); blank lines are ignored. Fields are
// `key=value`, separated by spaces or tabs; a line ending in CR LF is read
// as if it ended in LF. Lines are at most 4096 bytes, not counting the line
// end. Example (hashes shortened here; a file holds all 64 digits):
//
//   # tenant     role          credential                      shared rights
//   tenant=acme  role=tenant   token_sha256=2e032a40...2c37    shared=read
//   tenant=acme  role=tenant   token_sha256=sha256:fa7e...2c93  # rotation
//   tenant=ops   role=admin    cert_cn=ops-client.example.com
//   tenant=beta  role=tenant   token_sha256=9b71...0e4f  max_ram_bytes=1073741824
//
// Write a token's line with HashToken (or `printf '%s' TOKEN | sha256sum`).
//
//   tenant=        required; ValidateTenantName.
//   role=          required; `tenant`, `admin` or `metrics` (a token for
//                  /metrics alone, with no shared= or quota).
//   token_sha256=  the SHA-256 of a bearer token, as 64 lowercase hex digits,
//                  bare or with the `sha256:` prefix that HashToken writes.
//   cert_cn=       the common name of a verified mTLS client certificate:
//                  1..255 bytes of printable ASCII without spaces (and
//                  without `#`, which starts a comment).
//   shared=        optional; rights on the shared namespace: `none`
//                  (default), `read` or `write` (which implies read).
//   max_ram_bytes=, max_disk_bytes=, max_pins=, max_pinned_bytes=
//                  optional; the tenant's own quotas, in place of the
//                  server's tenant_max_* (config.proto): decimal, 0 for no
//                  quota, max_pins at most 2^32 - 1. They are the tenant's,
//                  not the line's: a key given on any of its lines holds
//                  for all of them, and two of its lines must not give one
//                  key different values.
//
// Each line has exactly one of token_sha256= and cert_cn=. A tenant may have
// several lines (several tokens during a rotation; a token and a
// certificate), each with its own role and shared rights. Parse fails with
// INVALID_ARGUMENT "<source>:<line>: <what>" on: an unknown key, a key given
// twice on a line, a field without '=', a missing tenant= or role=, a bad
// value, both or neither credential, a token hash or cert_cn that an earlier
// line already holds, a line over 4096 bytes, a tenant whose tag is reserved
// (kAnonymousTag, kSharedTag) or equal to another tenant's, a quota that is
// not a decimal number in range or that disagrees with one an earlier line
// of its tenant gave; and with
// "<source>: no credentials" on a file without a single entry.
//
// Thread-safety: every method is const, and an AccessTable is safe to use
// from any number of threads at once.
#ifndef KVTIER_KVSTORE_ACCESS_ACCESS_TABLE_H_
#define KVTIER_KVSTORE_ACCESS_ACCESS_TABLE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvtier::access {

// kAdmin may also call the admin RPCs (stats of all tenants, drain,
// membership); both roles may call the data RPCs in their own namespace.
// kMetrics calls no RPC: it may only scrape the server's /metrics (HTTP
// Basic, its tenant name as the user and its token as the password).
enum class Role { kTenant, kAdmin, kMetrics };

// Rights on the opt-in shared namespace; kWrite implies read.
enum class SharedAccess { kNone, kRead, kWrite };

// Who a caller is, once authenticated.
struct Identity {
  std::string tenant;   // a valid tenant name (ValidateTenantName)
  uint64_t tenant_tag;  // TenantTag(tenant)
  Role role;
  SharedAccess shared;

  friend bool operator==(const Identity&, const Identity&) = default;
};

// The tag of the store's anonymous tenant (a server without an access file).
inline constexpr uint64_t kAnonymousTag = 0;
// The tag of the shared namespace.
inline constexpr uint64_t kSharedTag = UINT64_MAX;

// The 64-bit tag that prefixes a tenant's stored page keys: the first 8
// bytes, big-endian, of SHA-256("kvtier.tenant.v1" || 0x00 || name), where
// the prefix is those 16 ASCII bytes. TenantTag("acme") = 0x33d2c3960d065bed.
// No valid access table holds a tenant tagged kAnonymousTag or kSharedTag.
uint64_t TenantTag(std::string_view name);

// INVALID_ARGUMENT unless `name` matches [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
absl::Status ValidateTenantName(std::string_view name);

// "sha256:" followed by the 64 lowercase hex digits of SHA-256(token): the
// value an access file's token_sha256= takes for that token.
std::string HashToken(std::string_view token);

// INVALID_ARGUMENT unless `token` is 16..4096 bytes of printable ASCII
// without spaces (0x21..0x7e).
absl::Status ValidateToken(std::string_view token);

// A tenant's own quotas from its lines; a key no line gives is absent (the
// server's default holds for it). 0 is no quota.
struct TenantQuotaOverrides {
  std::optional<uint64_t> max_ram_bytes;
  std::optional<uint64_t> max_disk_bytes;
  std::optional<uint32_t> max_pins;
  std::optional<uint64_t> max_pinned_bytes;

  friend bool operator==(const TenantQuotaOverrides&, const TenantQuotaOverrides&) = default;
};

class AccessTable;

namespace internal {
using TagFunction = uint64_t (*)(std::string_view name);
// AccessTable::Parse with `tenant_tag` in place of TenantTag, so that tests
// reach the reserved-tag and equal-tag checks, which SHA-256 never does in
// practice. Not for use outside tests.
absl::StatusOr<AccessTable> ParseWithTagFunction(std::string_view text, std::string_view source,
                                                 TagFunction tenant_tag);
}  // namespace internal

class AccessTable {
 public:
  // Parses the text of an access file (format above); `source` names it in
  // errors ("access.txt:3: unknown key \"tennant\"").
  static absl::StatusOr<AccessTable> Parse(std::string_view text, std::string_view source);

  // Reads `path` and parses it, naming the path in errors. The errno of a
  // failed open or read gives the code (absl::ErrnoToStatus: a missing file
  // is NOT_FOUND, an unreadable one PERMISSION_DENIED); a path that is not
  // a regular file (a directory, a FIFO) is FAILED_PRECONDITION; a file over
  // 1 MiB is INVALID_ARGUMENT.
  static absl::StatusOr<AccessTable> Load(const std::string& path);

  // The identity whose token hash is SHA-256(token), or nullopt. Hashes the
  // token once and compares the hash with every entry by CRYPTO_memcmp,
  // never stopping early, so that the time taken depends on the number of
  // entries and not on which one matches. A token failing ValidateToken is
  // nullopt after the same work.
  std::optional<Identity> FindToken(std::string_view token) const;

  // The identity of a verified mTLS client certificate's common name, or
  // nullopt. (A name is no secret: the lookup is an ordinary map find.)
  std::optional<Identity> FindCertificate(std::string_view common_name) const;

  // The name of the tenant tagged `tag`, or nullopt when no line names it.
  std::optional<std::string_view> TenantName(uint64_t tag) const;

  // The tenants whose lines give quotas, by tag (none with no key given).
  const absl::flat_hash_map<uint64_t, TenantQuotaOverrides>& quota_overrides() const {
    return quota_overrides_;
  }

  size_t token_count() const { return tokens_.size(); }
  size_t certificate_count() const { return certificates_.size(); }

 private:
  using Sha256 = std::array<unsigned char, 32>;  // a SHA-256 digest
  struct TokenEntry {
    Sha256 token_hash;
    Identity identity;
  };
  class Parser;
  friend absl::StatusOr<AccessTable> internal::ParseWithTagFunction(std::string_view,
                                                                    std::string_view,
                                                                    internal::TagFunction);

  AccessTable() = default;

  // Token hashes are distinct; so are certificate names.
  std::vector<TokenEntry> tokens_;
  absl::flat_hash_map<std::string, Identity> certificates_;
  absl::flat_hash_map<uint64_t, std::string> tenant_names_;  // by tag; tags distinct
  absl::flat_hash_map<uint64_t, TenantQuotaOverrides> quota_overrides_;
};

}  // namespace kvtier::access

#endif  // KVTIER_KVSTORE_ACCESS_ACCESS_TABLE_H_
