// Helpers shared by the kvstore tests: temporary directories and pages.
#ifndef KVTIER_TESTING_STORE_TEST_UTIL_H_
#define KVTIER_TESTING_STORE_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "common/checksum.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "kvstore/core/store.h"

namespace kvtier::store::testing {

// A fresh directory under the test temp dir, removed on destruction.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = std::filesystem::path(::testing::TempDir()) /
            (std::string("kvstore_") + info->test_suite_name() + "_" + info->name() + "_" +
             std::to_string(reinterpret_cast<uintptr_t>(this)));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string path() const { return path_.string(); }

 private:
  std::filesystem::path path_;
};

// 16 tokens x 1 head x 64 dims x f16 x (K, V) = 4096 bytes.
inline PageLayout SmallLayout() {
  return PageLayout{.page_size = 16, .n_kv_heads = 1, .head_dim = 64, .dtype = DType::kF16};
}

inline PageKey Key(uint64_t n, uint32_t layer = 0) {
  return PageKey{.hash = {.hi = 0x5eed, .lo = n}, .layer = layer};
}

// Deterministic bytes that differ for every (key, layout), the tenant
// included; eight at a time,
// so that tests writing hundreds of MiB stay fast in the checked build.
inline std::vector<uint8_t> PageBytes(const PageKey& key, const PageLayout& layout) {
  std::vector<uint8_t> bytes(layout.PageBytes());
  uint64_t x = key.hash.lo * 0x9e3779b97f4a7c15ull + key.layer + 1 + key.tenant * 0x2545f491ull;
  for (size_t i = 0; i < bytes.size(); i += sizeof(x)) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(bytes.data() + i, &x, std::min(sizeof(x), bytes.size() - i));
  }
  return bytes;
}

inline PutSpec SpecFor(const PageKey& key, const PageLayout& layout,
                       absl::Span<const uint8_t> bytes) {
  return PutSpec{.key = key, .layout = layout, .checksum = PageChecksum(bytes.data(), bytes.size())};
}

inline PutSpec Spec(const PageKey& key, const PageLayout& layout = SmallLayout()) {
  return SpecFor(key, layout, PageBytes(key, layout));
}

// Puts pages with the bytes PageBytes() gives.
inline absl::StatusOr<std::vector<PutResult>> PutPages(Store& store,
                                                       const std::vector<PageKey>& keys,
                                                       const PageLayout& layout = SmallLayout()) {
  std::vector<PutSpec> specs;
  std::vector<std::vector<uint8_t>> data;
  std::vector<absl::Span<const uint8_t>> spans;
  for (const PageKey& key : keys) {
    data.push_back(PageBytes(key, layout));
    specs.push_back(SpecFor(key, layout, data.back()));
  }
  for (const auto& d : data) spans.emplace_back(d);
  return store.BatchPut(specs, spans);
}

inline std::string AsString(absl::Span<const uint8_t> bytes) {
  return std::string(bytes.begin(), bytes.end());
}

}  // namespace kvtier::store::testing

#endif  // KVTIER_TESTING_STORE_TEST_UTIL_H_
