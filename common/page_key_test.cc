#include "common/page_key.h"

#include <numeric>
#include <vector>

#include "common/checksum.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

// Fixed vectors, computed independently (Python's xxhash package) from the
// scheme in page_key.h. They are repeated in proto/kvtier/v1/store.proto.
PageLayout VectorLayout() {
  return PageLayout{.page_size = 16, .n_kv_heads = 8, .head_dim = 128, .dtype = DType::kF16};
}

TEST(KeyChainTest, SeedMatchesFixedVector) {
  Hash128 seed = KeyChain::Seed("tenant-a", "llama-3.1-8b", VectorLayout());
  EXPECT_EQ(seed.ToHex(), "0c47bae97b55d1fbd23f4cbd9c944134");
}

TEST(KeyChainTest, ChainMatchesFixedVectors) {
  Hash128 seed = KeyChain::Seed("tenant-a", "llama-3.1-8b", VectorLayout());
  std::vector<uint32_t> tokens(32);
  std::iota(tokens.begin(), tokens.end(), 1u);
  std::vector<Hash128> chain = KeyChain::Chain(seed, tokens, 16);
  ASSERT_EQ(chain.size(), 2u);
  EXPECT_EQ(chain[0].ToHex(), "872f9101721802484503d21ef5bf71d7");
  EXPECT_EQ(chain[1].ToHex(), "3ee7fd3d4e7b4c3e0a036a2ea8e80339");
}

TEST(KeyChainTest, EmptySaltAndExtraBytesMatchFixedVectors) {
  PageLayout layout{.page_size = 32, .n_kv_heads = 3, .head_dim = 64, .dtype = DType::kBF16};
  Hash128 seed = KeyChain::Seed("", "", layout);
  EXPECT_EQ(seed.ToHex(), "428340b91b90fabd47066ec2a1dbfe31");
  std::vector<uint32_t> zeros(32, 0);
  EXPECT_EQ(KeyChain::Next(seed, zeros, "lora:7").ToHex(), "1cee505b7a21022c2f49b886b2f88d98");
}

TEST(KeyChainTest, TenantSaltSeparatesChains) {
  Hash128 a = KeyChain::Seed("tenant-a", "llama-3.1-8b", VectorLayout());
  Hash128 b = KeyChain::Seed("tenant-b", "llama-3.1-8b", VectorLayout());
  EXPECT_EQ(b.ToHex(), "5ca5d28afb34f0933c0c7a6d47874552");
  EXPECT_NE(a, b);
}

TEST(KeyChainTest, LayoutEntersSeed) {
  PageLayout other = VectorLayout();
  other.dtype = DType::kBF16;
  EXPECT_NE(KeyChain::Seed("t", "m", VectorLayout()), KeyChain::Seed("t", "m", other));
}

TEST(KeyChainTest, TrailingPartialPageGetsNoKey) {
  std::vector<uint32_t> tokens(47, 5);
  EXPECT_EQ(KeyChain::Chain(Hash128{}, tokens, 16).size(), 2u);
}

TEST(KeyChainTest, PrefixKeysDoNotDependOnLaterTokens) {
  Hash128 seed = KeyChain::Seed("t", "m", VectorLayout());
  std::vector<uint32_t> a(48, 1), b(48, 1);
  b[40] = 2;
  auto ca = KeyChain::Chain(seed, a, 16), cb = KeyChain::Chain(seed, b, 16);
  EXPECT_EQ(ca[0], cb[0]);
  EXPECT_EQ(ca[1], cb[1]);
  EXPECT_NE(ca[2], cb[2]);
}

TEST(Hash128Test, CanonicalRoundTrip) {
  Hash128 h{0x0102030405060708ull, 0x090a0b0c0d0e0f10ull};
  EXPECT_EQ(h.ToHex(), "0102030405060708090a0b0c0d0e0f10");
  auto parsed = Hash128::FromBytes(h.CanonicalString());
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, h);
}

TEST(Hash128Test, FromBytesRejectsWrongLength) {
  auto parsed = Hash128::FromBytes("short");
  EXPECT_EQ(parsed.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PageKeyTest, EncodeIsHashThenBigEndianLayer) {
  PageKey key{.hash = Hash128{1, 2}, .layer = 0x01020304};
  std::string enc = key.Encode();
  ASSERT_EQ(enc.size(), PageKey::kUntenantedBytes);
  EXPECT_EQ(enc.substr(0, 16), key.hash.CanonicalString());
  EXPECT_EQ(enc.substr(16), std::string("\x01\x02\x03\x04", 4));
  auto back = PageKey::Decode(enc);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, key);
  EXPECT_EQ(PageKey::Decode("abc").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PageKeyTest, ATenantPrefixesItsKeys) {
  PageKey key{.tenant = 0x0a0b0c0d0e0f1011, .hash = Hash128{1, 2}, .layer = 5};
  std::string enc = key.Encode();
  ASSERT_EQ(enc.size(), PageKey::kTenantedBytes);
  EXPECT_EQ(enc.substr(0, 8), std::string("\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11", 8));
  EXPECT_EQ(enc.substr(8, 16), key.hash.CanonicalString());
  EXPECT_EQ(enc.substr(24), std::string("\0\0\0\x05", 4));
  EXPECT_EQ(*PageKey::Decode(enc), key);
  // Each key has one encoding: tenant 0 is never written with its prefix.
  EXPECT_EQ(PageKey::Decode(std::string(8, '\0') + enc.substr(8)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PageKey::Decode(enc + "x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(key, (PageKey{.hash = key.hash, .layer = key.layer}));
}

TEST(ChecksumTest, MatchesFixedVector) {
  std::vector<uint8_t> bytes(256);
  std::iota(bytes.begin(), bytes.end(), 0);
  EXPECT_EQ(PageChecksum(bytes.data(), bytes.size()), 0x9408a4433b952d71ull);
}

}  // namespace
}  // namespace kvtier
