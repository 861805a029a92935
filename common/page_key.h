// PageKey: content-addressed, deterministic keys for KV pages.
//
// The key scheme (also specified in proto/kvtier/v1/store.proto so other
// languages can implement it):
//
//   hash128(bytes)    = XXH3-128 of `bytes` with seed 0.
//   canonical(h)      = XXH128_canonical_t of h: 16 bytes, high 64 bits first,
//                       each half big-endian.
//   h_{-1} (the seed) = hash128("kvtier.pagekey.v1"            (17 ASCII bytes)
//                               || LE-u32 len(tenant_salt) || tenant_salt
//                               || LE-u32 len(model_fingerprint) || model_fingerprint
//                               || PageLayout::Encode(layout)  (16 bytes))
//   h_i               = hash128(canonical(h_{i-1})
//                               || LE-u32 token for each of the page's page_size tokens
//                               || extra)                      (extra may be empty)
//
// The stored page is keyed by (h_i, layer). The same tokens under the same
// tenant, model and layout give the same keys on every node, which is what
// makes prefix reuse across requests and nodes work; a different tenant salt
// gives unrelated keys, so tenants can neither share nor probe pages.
#ifndef KVTIER_COMMON_PAGE_KEY_H_
#define KVTIER_COMMON_PAGE_KEY_H_

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/page_layout.h"

namespace kvtier {

struct Hash128 {
  uint64_t hi = 0;
  uint64_t lo = 0;

  static constexpr size_t kBytes = 16;
  // Canonical (big-endian) bytes, as XXH128_canonicalFromHash writes them.
  std::array<uint8_t, kBytes> Canonical() const;
  static Hash128 FromCanonical(const uint8_t bytes[kBytes]);
  // INVALID_ARGUMENT unless `bytes` is exactly 16 bytes long.
  static absl::StatusOr<Hash128> FromBytes(std::string_view bytes);
  std::string CanonicalString() const;
  std::string ToHex() const;

  friend bool operator==(const Hash128&, const Hash128&) = default;
  friend auto operator<=>(const Hash128&, const Hash128&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const Hash128& v) {
    return H::combine(std::move(h), v.hi, v.lo);
  }
};

// The key of one stored page: the tenant whose key space holds it, a chain
// hash and a layer index. Clients name pages by (hash, layer) only; the
// server sets `tenant` from the caller's authenticated identity, so two
// tenants' equal prompts are two different pages.
struct PageKey {
  // The owning tenant's tag (kvstore/access: TenantTag). 0 is the
  // anonymous tenant of a server without access control.
  uint64_t tenant = 0;
  Hash128 hash{};
  uint32_t layer = 0;

  // Storage encoding: [BE-u64 tenant] canonical(hash) BE-u32 layer, so that
  // byte order groups a tenant's pages, and a page's layers, together. The
  // tenant is left out when it is 0 (20 bytes, the encoding of directories
  // written before tenants existed, which keep their pages); else 28 bytes.
  static constexpr size_t kUntenantedBytes = 20;
  static constexpr size_t kTenantedBytes = 28;
  std::string Encode() const;
  // INVALID_ARGUMENT unless `bytes` is a 20-byte encoding or a 28-byte one
  // with a nonzero tenant (each key has exactly one encoding).
  static absl::StatusOr<PageKey> Decode(std::string_view bytes);
  std::string DebugString() const;

  friend bool operator==(const PageKey&, const PageKey&) = default;
  friend auto operator<=>(const PageKey&, const PageKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const PageKey& k) {
    return H::combine(std::move(h), k.tenant, k.hash, k.layer);
  }
};

// Computes chain hashes as specified above.
class KeyChain {
 public:
  static Hash128 Seed(std::string_view tenant_salt, std::string_view model_fingerprint,
                      const PageLayout& layout);
  // One link: the hash of a page whose tokens are `tokens`.
  static Hash128 Next(const Hash128& prev, absl::Span<const uint32_t> tokens,
                      std::string_view extra = {});
  // Hashes of every full page of `tokens` (a trailing partial page gets none).
  // REQUIRES: page_size > 0.
  static std::vector<Hash128> Chain(const Hash128& seed, absl::Span<const uint32_t> tokens,
                                    uint32_t page_size);
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_PAGE_KEY_H_
