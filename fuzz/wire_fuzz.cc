// The decoders of wire values and the key chain: page keys, hashes and
// layouts from protobuf, the storage encoding of keys, page checksums, and
// key chains over fuzzed tokens, salts and layouts. Decoded values must
// encode back to themselves.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "kvtier/v1/convert.h"
#include "kvtier/v1/store.pb.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  const std::string bytes(reinterpret_cast<const char*>(data), size);
  v1::PutPage page;
  if (page.ParseFromString(bytes)) {
    absl::StatusOr<PageKey> key = v1::KeyFromProto(page.key(), "key");
    if (key.ok()) {
      v1::PageKey again;
      v1::KeyToProto(*key, &again);
      if (*v1::KeyFromProto(again, "again") != *key) __builtin_trap();
      if (*PageKey::Decode(key->Encode()) != *key) __builtin_trap();
    }
    absl::StatusOr<PageLayout> layout = v1::LayoutFromProto(page.layout(), "layout");
    if (layout.ok()) {
      if (!layout->Validate().ok()) __builtin_trap();
      v1::PageLayout again;
      v1::LayoutToProto(*layout, &again);
      if (!(*v1::LayoutFromProto(again, "again") == *layout)) __builtin_trap();
      std::vector<uint32_t> tokens(size / 4);
      if (!tokens.empty()) std::memcpy(tokens.data(), data, tokens.size() * 4);
      const Hash128 seed = KeyChain::Seed(page.inline_data(), bytes, *layout);
      KeyChain::Chain(seed, tokens, layout->page_size);
    }
    PageChecksum(page.inline_data().data(), page.inline_data().size());
  }
  PageKey::Decode(bytes).status().IgnoreError();
  Hash128::FromBytes(bytes).status().IgnoreError();
  v1::HashFromProto(bytes, "hash").status().IgnoreError();
  return 0;
}
