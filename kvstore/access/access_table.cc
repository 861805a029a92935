#include "kvstore/access/access_table.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/small_file.h"
#include "common/status_macros.h"
#include "kvtier/v1/credentials.h"

namespace kvtier::access {
namespace {

constexpr size_t kMaxLineBytes = 4096;
constexpr size_t kMaxFileBytes = size_t{1} << 20;
constexpr size_t kMaxTenantNameBytes = 64;
using wire::kMaxTokenBytes;
using wire::kMinTokenBytes;
constexpr size_t kMaxCommonNameBytes = 255;
constexpr std::string_view kHashPrefix = "sha256:";
// "kvtier.tenant.v1" and the 0x00 that ends it.
constexpr std::string_view kTagDomain{"kvtier.tenant.v1\0", 17};

using Digest = std::array<unsigned char, SHA256_DIGEST_LENGTH>;

// This abseil's string_view is its own type, not std::string_view.
absl::string_view AsAbsl(std::string_view bytes) {
  return absl::string_view(bytes.data(), bytes.size());
}

Digest Sha256Of(std::string_view bytes) {
  Digest digest;
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(), digest.data());
  return digest;
}

// Bytes 0x21..0x7e: printable ASCII without the space.
bool IsVisibleAscii(std::string_view bytes) {
  for (char c : bytes) {
    if (!wire::IsTokenByte(c)) return false;
  }
  return true;
}

// `bytes` quoted and escaped, for error messages about untrusted text.
std::string Quoted(std::string_view bytes) {
  return absl::StrCat("\"", absl::CHexEscape(AsAbsl(bytes)), "\"");
}

// The digest a token_sha256= value names, or nullopt when it is not 64
// lowercase hex digits (after an optional "sha256:").
std::optional<Digest> ParseTokenHash(std::string_view value) {
  if (value.starts_with(kHashPrefix)) value.remove_prefix(kHashPrefix.size());
  if (value.size() != 2 * SHA256_DIGEST_LENGTH) return std::nullopt;
  Digest digest{};
  for (size_t i = 0; i < value.size(); ++i) {
    const char c = value[i];
    int nibble;
    if (c >= '0' && c <= '9') {
      nibble = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      nibble = c - 'a' + 10;
    } else {
      return std::nullopt;
    }
    digest[i / 2] = static_cast<unsigned char>(digest[i / 2] << 4 | nibble);
  }
  return digest;
}

absl::StatusOr<std::string> ReadAccessFile(const std::string& path) {
  return ReadSmallFile(path, kMaxFileBytes, "access file");
}

}  // namespace

uint64_t TenantTag(std::string_view name) {
  const Digest digest = Sha256Of(absl::StrCat(AsAbsl(kTagDomain), AsAbsl(name)));
  uint64_t tag = 0;
  for (int i = 0; i < 8; ++i) tag = (tag << 8) | digest[i];
  return tag;
}

absl::Status ValidateTenantName(std::string_view name) {
  bool valid = !name.empty() && name.size() <= kMaxTenantNameBytes && absl::ascii_isalnum(name[0]);
  for (size_t i = 1; valid && i < name.size(); ++i) {
    const char c = name[i];
    valid = absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-';
  }
  if (valid) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "tenant name ", Quoted(name), " does not match [A-Za-z0-9][A-Za-z0-9._-]{0,63}"));
}

std::string HashToken(std::string_view token) {
  const Digest digest = Sha256Of(token);
  return absl::StrCat(AsAbsl(kHashPrefix),
                      absl::BytesToHexString(absl::string_view(
                          reinterpret_cast<const char*>(digest.data()), digest.size())));
}

absl::Status ValidateToken(std::string_view token) {
  // The token is a secret: errors describe it, never quote it.
  if (token.size() < kMinTokenBytes || token.size() > kMaxTokenBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("a token is 16..4096 bytes, not ", token.size()));
  }
  if (!IsVisibleAscii(token)) {
    return absl::InvalidArgumentError(
        "a token is printable ASCII without spaces (bytes 0x21..0x7e)");
  }
  return absl::OkStatus();
}

// Builds a table line by line, remembering where each credential and tag
// first appeared so that repeats are errors.
class AccessTable::Parser {
 public:
  Parser(std::string_view source, internal::TagFunction tenant_tag)
      : source_(source), tenant_tag_(tenant_tag) {}

  // `line` without its LF; `number` counts from 1.
  absl::Status ParseLine(std::string_view line, int number) {
    if (line.ends_with('\r')) line.remove_suffix(1);
    if (line.size() > kMaxLineBytes) {
      return Error(number, absl::StrCat("line longer than ", kMaxLineBytes, " bytes"));
    }
    line = line.substr(0, line.find('#'));
    std::optional<std::string_view> tenant, role, token_sha256, cert_cn, shared;
    std::optional<std::string_view> max_ram_bytes, max_disk_bytes, max_pins, max_pinned_bytes;
    bool any_field = false;
    for (absl::string_view piece :
         absl::StrSplit(AsAbsl(line), absl::ByAnyChar(" \t"), absl::SkipEmpty())) {
      const std::string_view field(piece.data(), piece.size());
      any_field = true;
      const size_t equals = field.find('=');
      if (equals == std::string_view::npos) {
        return Error(number, absl::StrCat("field ", Quoted(field), " has no '='"));
      }
      const std::string_view key = field.substr(0, equals);
      std::optional<std::string_view>* slot = key == "tenant"             ? &tenant
                                              : key == "role"             ? &role
                                              : key == "token_sha256"     ? &token_sha256
                                              : key == "cert_cn"          ? &cert_cn
                                              : key == "shared"           ? &shared
                                              : key == "max_ram_bytes"    ? &max_ram_bytes
                                              : key == "max_disk_bytes"   ? &max_disk_bytes
                                              : key == "max_pins"         ? &max_pins
                                              : key == "max_pinned_bytes" ? &max_pinned_bytes
                                                                          : nullptr;
      if (slot == nullptr) return Error(number, absl::StrCat("unknown key ", Quoted(key)));
      if (slot->has_value()) {
        return Error(number, absl::StrCat("key ", AsAbsl(key), " given twice"));
      }
      *slot = field.substr(equals + 1);
    }
    if (!any_field) return absl::OkStatus();

    if (!tenant.has_value()) return Error(number, "missing tenant=");
    if (!role.has_value()) return Error(number, "missing role=");
    if (absl::Status valid = ValidateTenantName(*tenant); !valid.ok()) {
      return Error(number, std::string_view(valid.message().data(), valid.message().size()));
    }
    Identity identity{std::string(*tenant), tenant_tag_(*tenant), Role::kTenant,
                      SharedAccess::kNone};
    if (*role == "admin") {
      identity.role = Role::kAdmin;
    } else if (*role == "metrics") {
      identity.role = Role::kMetrics;
      if ((shared.has_value() && *shared != "none") || max_ram_bytes.has_value() ||
          max_disk_bytes.has_value() || max_pins.has_value() || max_pinned_bytes.has_value()) {
        return Error(number, "a metrics credential holds no pages: no shared= or quota");
      }
    } else if (*role != "tenant") {
      return Error(number, absl::StrCat("role is tenant, admin or metrics, not ", Quoted(*role)));
    }
    if (shared.has_value()) {
      if (*shared == "read") {
        identity.shared = SharedAccess::kRead;
      } else if (*shared == "write") {
        identity.shared = SharedAccess::kWrite;
      } else if (*shared != "none") {
        return Error(number, absl::StrCat("shared is none, read or write, not ", Quoted(*shared)));
      }
    }
    if (token_sha256.has_value() && cert_cn.has_value()) {
      return Error(number, "both token_sha256= and cert_cn=: one credential per line");
    }
    if (!token_sha256.has_value() && !cert_cn.has_value()) {
      return Error(number, "no credential: give token_sha256= or cert_cn=");
    }
    RETURN_IF_ERROR(CheckTag(identity, number));
    TenantQuotaOverrides& quotas = table_.quota_overrides_[identity.tenant_tag];
    RETURN_IF_ERROR(SetQuota("max_ram_bytes", max_ram_bytes, UINT64_MAX, identity, number,
                             &quotas.max_ram_bytes));
    RETURN_IF_ERROR(SetQuota("max_disk_bytes", max_disk_bytes, UINT64_MAX, identity, number,
                             &quotas.max_disk_bytes));
    RETURN_IF_ERROR(
        SetQuota("max_pins", max_pins, UINT32_MAX, identity, number, &quotas.max_pins));
    RETURN_IF_ERROR(SetQuota("max_pinned_bytes", max_pinned_bytes, UINT64_MAX, identity, number,
                             &quotas.max_pinned_bytes));
    if (quotas == TenantQuotaOverrides()) table_.quota_overrides_.erase(identity.tenant_tag);
    if (token_sha256.has_value()) return AddToken(*token_sha256, std::move(identity), number);
    return AddCertificate(*cert_cn, std::move(identity), number);
  }

  absl::StatusOr<AccessTable> Finish() && {
    if (table_.tokens_.empty() && table_.certificates_.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(AsAbsl(source_), ": no credentials"));
    }
    return std::move(table_);
  }

 private:
  absl::Status Error(int number, std::string_view what) const {
    return absl::InvalidArgumentError(
        absl::StrCat(AsAbsl(source_), ":", number, ": ", AsAbsl(what)));
  }

  absl::Status CheckTag(const Identity& identity, int number) {
    if (identity.tenant_tag == kAnonymousTag || identity.tenant_tag == kSharedTag) {
      return Error(number, absl::StrCat("tenant ", Quoted(identity.tenant),
                                        " has the reserved tag ", absl::Hex(identity.tenant_tag)));
    }
    const auto [it, added] =
        table_.tenant_names_.try_emplace(identity.tenant_tag, identity.tenant);
    if (!added && it->second != identity.tenant) {
      return Error(number,
                   absl::StrCat("tenants ", Quoted(it->second), " and ", Quoted(identity.tenant),
                                " have the same tag ", absl::Hex(identity.tenant_tag)));
    }
    return absl::OkStatus();
  }

  // Sets one quota key of a tenant from `value` (absent: the line gives
  // none), which must be decimal, at most `max`, and what the tenant's
  // earlier lines gave for that key, if any.
  template <typename T>
  absl::Status SetQuota(std::string_view key, std::optional<std::string_view> value, uint64_t max,
                        const Identity& identity, int number, std::optional<T>* quota) {
    if (!value.has_value()) return absl::OkStatus();
    uint64_t parsed = 0;
    if (value->empty() || value->size() > 20 ||
        value->find_first_not_of("0123456789") != std::string_view::npos ||
        !absl::SimpleAtoi(AsAbsl(*value), &parsed) || parsed > max) {
      return Error(number, absl::StrCat(AsAbsl(key), " is a decimal number of at most ", max,
                                        ", not ", Quoted(*value)));
    }
    const auto [it, added] =
        quota_lines_.try_emplace(std::make_pair(identity.tenant_tag, std::string(key)), number);
    if (!added && **quota != parsed) {
      return Error(number, absl::StrCat(AsAbsl(key), "=", parsed, " disagrees with line ",
                                        it->second, " of tenant ", Quoted(identity.tenant),
                                        " (", AsAbsl(key), "=", **quota, ")"));
    }
    *quota = static_cast<T>(parsed);
    return absl::OkStatus();
  }

  absl::Status AddToken(std::string_view value, Identity identity, int number) {
    const std::optional<Sha256> hash = ParseTokenHash(value);
    if (!hash.has_value()) {
      return Error(number, "token_sha256 is 64 lowercase hex digits, bare or after \"sha256:\"");
    }
    const auto [it, added] = token_lines_.try_emplace(*hash, number);
    if (!added) return Error(number, absl::StrCat("token_sha256 repeats line ", it->second));
    table_.tokens_.push_back(TokenEntry{*hash, std::move(identity)});
    return absl::OkStatus();
  }

  absl::Status AddCertificate(std::string_view common_name, Identity identity, int number) {
    if (common_name.empty() || common_name.size() > kMaxCommonNameBytes ||
        !IsVisibleAscii(common_name)) {
      return Error(number, "cert_cn is 1..255 bytes of printable ASCII without spaces");
    }
    const auto [it, added] = certificate_lines_.try_emplace(std::string(common_name), number);
    if (!added) {
      return Error(number,
                   absl::StrCat("cert_cn ", Quoted(common_name), " repeats line ", it->second));
    }
    table_.certificates_.emplace(std::string(common_name), std::move(identity));
    return absl::OkStatus();
  }

  const std::string_view source_;
  const internal::TagFunction tenant_tag_;
  AccessTable table_;
  absl::flat_hash_map<Sha256, int> token_lines_;
  absl::flat_hash_map<std::string, int> certificate_lines_;
  // The line that first gave a (tenant tag, quota key).
  absl::flat_hash_map<std::pair<uint64_t, std::string>, int> quota_lines_;
};

absl::StatusOr<AccessTable> internal::ParseWithTagFunction(std::string_view text,
                                                           std::string_view source,
                                                           TagFunction tenant_tag) {
  AccessTable::Parser parser(source, tenant_tag);
  int number = 0;
  for (absl::string_view line : absl::StrSplit(AsAbsl(text), '\n')) {
    RETURN_IF_ERROR(parser.ParseLine(std::string_view(line.data(), line.size()), ++number));
  }
  return std::move(parser).Finish();
}

absl::StatusOr<AccessTable> AccessTable::Parse(std::string_view text, std::string_view source) {
  return internal::ParseWithTagFunction(text, source, &TenantTag);
}

absl::StatusOr<AccessTable> AccessTable::Load(const std::string& path) {
  ASSIGN_OR_RETURN(const std::string text, ReadAccessFile(path));
  return Parse(text, path);
}

std::optional<Identity> AccessTable::FindToken(std::string_view token) const {
  const bool valid = ValidateToken(token).ok();
  const Sha256 hash = Sha256Of(token);
  // Every entry is compared, and the match is selected by masks, not by a
  // branch, so that the scan takes the same time wherever the match is.
  uint64_t match = tokens_.size();
  for (uint64_t i = 0; i < tokens_.size(); ++i) {
    const uint64_t differs = static_cast<uint32_t>(
        CRYPTO_memcmp(hash.data(), tokens_[i].token_hash.data(), hash.size()));
    const uint64_t equal_mask = ((differs | (0 - differs)) >> 63) - 1;  // ~0 iff differs == 0
    match = (match & ~equal_mask) | (i & equal_mask);
  }
  if (!valid || match == tokens_.size()) return std::nullopt;
  return tokens_[match].identity;
}

std::optional<std::string_view> AccessTable::TenantName(uint64_t tag) const {
  const auto it = tenant_names_.find(tag);
  if (it == tenant_names_.end()) return std::nullopt;
  return std::string_view(it->second);
}

std::optional<Identity> AccessTable::FindCertificate(std::string_view common_name) const {
  const auto it = certificates_.find(AsAbsl(common_name));
  if (it == certificates_.end()) return std::nullopt;
  return it->second;
}

}  // namespace kvtier::access
