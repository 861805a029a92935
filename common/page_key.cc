#include "common/page_key.h"

#include <cstring>

#include <xxhash.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "common/endian.h"

namespace kvtier {
namespace {

constexpr std::string_view kSeedDomain = "kvtier.pagekey.v1";

Hash128 FromXxh(XXH128_hash_t h) { return Hash128{h.high64, h.low64}; }

void UpdateLe32(XXH3_state_t* state, uint32_t v) {
  uint8_t b[4];
  StoreLe32(b, v);
  XXH3_128bits_update(state, b, sizeof(b));
}

void UpdateLengthPrefixed(XXH3_state_t* state, std::string_view s) {
  UpdateLe32(state, static_cast<uint32_t>(s.size()));
  XXH3_128bits_update(state, s.data(), s.size());
}

// RAII owner of an XXH3 streaming state.
class Xxh3State {
 public:
  Xxh3State() : state_(XXH3_createState()) { XXH3_128bits_reset(state_); }
  ~Xxh3State() { XXH3_freeState(state_); }
  Xxh3State(const Xxh3State&) = delete;
  Xxh3State& operator=(const Xxh3State&) = delete;
  XXH3_state_t* get() { return state_; }

 private:
  XXH3_state_t* state_;
};

}  // namespace

std::array<uint8_t, Hash128::kBytes> Hash128::Canonical() const {
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH128_hash_t{lo, hi});
  std::array<uint8_t, kBytes> out;
  std::memcpy(out.data(), c.digest, kBytes);
  return out;
}

Hash128 Hash128::FromCanonical(const uint8_t bytes[kBytes]) {
  XXH128_canonical_t c;
  std::memcpy(c.digest, bytes, kBytes);
  return FromXxh(XXH128_hashFromCanonical(&c));
}

absl::StatusOr<Hash128> Hash128::FromBytes(std::string_view bytes) {
  if (bytes.size() != kBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("page hash must be %zu bytes, got %zu", kBytes, bytes.size()));
  }
  return FromCanonical(reinterpret_cast<const uint8_t*>(bytes.data()));
}

std::string Hash128::CanonicalString() const {
  auto c = Canonical();
  return std::string(reinterpret_cast<const char*>(c.data()), c.size());
}

std::string Hash128::ToHex() const { return absl::BytesToHexString(CanonicalString()); }

std::string PageKey::Encode() const {
  std::string out;
  out.reserve(kTenantedBytes);
  if (tenant != 0) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>(tenant >> (8 * (7 - i))));
  }
  out += hash.CanonicalString();
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>(layer >> (8 * (3 - i))));
  return out;
}

absl::StatusOr<PageKey> PageKey::Decode(std::string_view bytes) {
  if (bytes.size() != kUntenantedBytes && bytes.size() != kTenantedBytes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("encoded page key must be %zu or %zu bytes, got %zu", kUntenantedBytes,
                        kTenantedBytes, bytes.size()));
  }
  PageKey key;
  if (bytes.size() == kTenantedBytes) {
    for (int i = 0; i < 8; ++i) key.tenant = (key.tenant << 8) | static_cast<uint8_t>(bytes[i]);
    if (key.tenant == 0) {
      return absl::InvalidArgumentError("encoded page key of 28 bytes names tenant 0");
    }
    bytes.remove_prefix(8);
  }
  key.hash = Hash128::FromCanonical(reinterpret_cast<const uint8_t*>(bytes.data()));
  for (int i = 0; i < 4; ++i) {
    key.layer = (key.layer << 8) | static_cast<uint8_t>(bytes[16 + i]);
  }
  return key;
}

std::string PageKey::DebugString() const {
  if (tenant == 0) return absl::StrFormat("%s/%u", hash.ToHex(), layer);
  return absl::StrFormat("%016x:%s/%u", tenant, hash.ToHex(), layer);
}

Hash128 KeyChain::Seed(std::string_view tenant_salt, std::string_view model_fingerprint,
                       const PageLayout& layout) {
  Xxh3State state;
  XXH3_128bits_update(state.get(), kSeedDomain.data(), kSeedDomain.size());
  UpdateLengthPrefixed(state.get(), tenant_salt);
  UpdateLengthPrefixed(state.get(), model_fingerprint);
  uint8_t encoded[PageLayout::kEncodedBytes];
  layout.Encode(encoded);
  XXH3_128bits_update(state.get(), encoded, sizeof(encoded));
  return FromXxh(XXH3_128bits_digest(state.get()));
}

Hash128 KeyChain::Next(const Hash128& prev, absl::Span<const uint32_t> tokens,
                       std::string_view extra) {
  Xxh3State state;
  auto canonical = prev.Canonical();
  XXH3_128bits_update(state.get(), canonical.data(), canonical.size());
  for (uint32_t t : tokens) UpdateLe32(state.get(), t);
  XXH3_128bits_update(state.get(), extra.data(), extra.size());
  return FromXxh(XXH3_128bits_digest(state.get()));
}

std::vector<Hash128> KeyChain::Chain(const Hash128& seed, absl::Span<const uint32_t> tokens,
                                     uint32_t page_size) {
  std::vector<Hash128> out;
  out.reserve(tokens.size() / page_size);
  Hash128 h = seed;
  for (size_t start = 0; start + page_size <= tokens.size(); start += page_size) {
    h = Next(h, tokens.subspan(start, page_size));
    out.push_back(h);
  }
  return out;
}

}  // namespace kvtier
