// Deterministic synthetic pages for the integration suites: keys from the
// real key chain (common/page_key.h), bytes from a seed, so every test can
// recompute what it stored.
#ifndef KVTIER_TESTING_TEST_PAGES_H_
#define KVTIER_TESTING_TEST_PAGES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "client/store_client.h"
#include "common/page_key.h"
#include "common/page_layout.h"

namespace kvtier::testing {

// 2 * 16 * 2 * 64 * 2 = 8 KiB pages.
inline PageLayout SmallLayout() {
  return PageLayout{.page_size = 16, .n_kv_heads = 2, .head_dim = 64, .dtype = DType::kF16};
}

// The chain of a synthetic prompt of n_pages full pages; `prompt` varies it.
inline std::vector<Hash128> PromptChain(const PageLayout& layout, uint32_t n_pages,
                                        uint32_t prompt) {
  std::vector<uint32_t> tokens(size_t{n_pages} * layout.page_size);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<uint32_t>(prompt * 7919 + i);
  return KeyChain::Chain(KeyChain::Seed("it-tenant", "it-model", layout), tokens,
                         layout.page_size);
}

// Bytes of the page (hash, layer): a function of the key only.
inline std::string PageBytes(const PageLayout& layout, const PageKey& key) {
  std::string bytes(layout.PageBytes(), '\0');
  uint64_t x = key.hash.lo ^ (key.hash.hi * 31) ^ (uint64_t{key.layer} << 40);
  for (char& c : bytes) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    c = static_cast<char>(x >> 56);
  }
  return bytes;
}

// Pages of `chain` x layers [0, layers), page-major, with their bytes.
struct PageSet {
  std::vector<PageKey> keys;
  std::vector<std::string> bytes;

  std::vector<client::PutPage> ToPut(const PageLayout& layout) const {
    std::vector<client::PutPage> out;
    for (size_t i = 0; i < keys.size(); ++i) {
      out.push_back(client::PutPage{
          .key = keys[i], .layout = layout,
          .data = {reinterpret_cast<const uint8_t*>(bytes[i].data()), bytes[i].size()}});
    }
    return out;
  }
};

inline PageSet MakePages(const PageLayout& layout, const std::vector<Hash128>& chain,
                         uint32_t layers) {
  PageSet set;
  for (const Hash128& h : chain) {
    for (uint32_t layer = 0; layer < layers; ++layer) {
      PageKey key{.hash = h, .layer = layer};
      set.keys.push_back(key);
      set.bytes.push_back(PageBytes(layout, key));
    }
  }
  return set;
}

}  // namespace kvtier::testing

#endif  // KVTIER_TESTING_TEST_PAGES_H_
