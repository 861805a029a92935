#include "common/checksum.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace kvtier {
namespace {

// Sizes around the chunk boundary and odd tails: the copy is exact and the
// checksum equals the one-shot checksum of the same bytes.
TEST(ChecksumTest, CopyWithChecksumCopiesAndHashesLikeOneShot) {
  std::mt19937_64 gen(7);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{4096}, size_t{131071}, size_t{131072},
                       size_t{131073}, size_t{1} << 20, (size_t{4} << 20) + 17}) {
    std::vector<uint8_t> src(bytes);
    for (uint8_t& b : src) b = static_cast<uint8_t>(gen());
    std::vector<uint8_t> dst(bytes + 1, 0xee);
    EXPECT_EQ(CopyWithChecksum(dst.data(), src.data(), bytes), PageChecksum(src.data(), bytes))
        << bytes;
    EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin())) << bytes;
    EXPECT_EQ(dst[bytes], 0xee) << "wrote past the end at " << bytes;
  }
}

// Appending hashes exactly the bytes appended, whatever `out` held.
TEST(ChecksumTest, AppendWithChecksumAppendsAndHashesTheAppendedBytes) {
  std::mt19937_64 gen(11);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{131071}, size_t{131072}, size_t{131073},
                       (size_t{4} << 20) + 17}) {
    std::string src(bytes, '\0');
    for (char& c : src) c = static_cast<char>(gen());
    std::string out = "prefix";
    const uint64_t checksum = AppendWithChecksum(&out, src.data(), bytes);
    EXPECT_EQ(checksum, PageChecksum(src.data(), bytes)) << bytes;
    EXPECT_EQ(out, "prefix" + src) << bytes;
  }
}

// A source that changes under the copy (a shared-memory slot reused
// meanwhile): whatever bytes are appended, the checksum returned is theirs,
// so a torn copy fails its check instead of passing with the source's.
TEST(ChecksumTest, AppendWithChecksumDescribesTheCopyWhenTheSourceChanges) {
  constexpr size_t kBytes = size_t{1} << 20;
  std::vector<std::atomic<uint64_t>> src(kBytes / sizeof(uint64_t));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (uint64_t v = 1; !stop.load(std::memory_order_relaxed); ++v) {
      for (size_t i = 0; i < src.size(); i += 512) src[i].store(v, std::memory_order_relaxed);
    }
  });
  int torn = 0;
  for (int i = 0; i < 200; ++i) {
    std::string appended;
    const uint64_t checksum = AppendWithChecksum(&appended, src.data(), kBytes);
    EXPECT_EQ(checksum, PageChecksum(appended.data(), appended.size())) << i;
    if (checksum != PageChecksum(src.data(), kBytes)) ++torn;
  }
  stop = true;
  writer.join();
  // The writer did change the source under some copies (else the test
  // showed nothing).
  EXPECT_GT(torn, 0);
}

TEST(ChecksumTest, CopyAndHashCopyCopiesAndHashesLikeOneShot) {
  std::mt19937_64 gen(13);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{131071}, size_t{131072}, size_t{131073},
                       (size_t{4} << 20) + 17}) {
    std::vector<uint8_t> src(bytes);
    for (uint8_t& b : src) b = static_cast<uint8_t>(gen());
    std::vector<uint8_t> dst(bytes + 1, 0xee);
    EXPECT_EQ(CopyAndHashCopy(dst.data(), src.data(), bytes), PageChecksum(src.data(), bytes))
        << bytes;
    EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin())) << bytes;
    EXPECT_EQ(dst[bytes], 0xee) << "wrote past the end at " << bytes;
  }
}

// A source another process changes under the copy (a local lane's
// segment): the checksum returned is always that of the bytes written.
TEST(ChecksumTest, CopyAndHashCopyDescribesTheCopyWhenTheSourceChanges) {
  constexpr size_t kBytes = size_t{1} << 20;
  std::vector<std::atomic<uint64_t>> src(kBytes / sizeof(uint64_t));
  std::atomic<bool> stop{false};
  std::thread writer([&] {
    for (uint64_t v = 1; !stop.load(std::memory_order_relaxed); ++v) {
      for (size_t i = 0; i < src.size(); i += 512) src[i].store(v, std::memory_order_relaxed);
    }
  });
  int torn = 0;
  std::vector<uint8_t> dst(kBytes);
  for (int i = 0; i < 200; ++i) {
    const uint64_t checksum = CopyAndHashCopy(dst.data(), src.data(), kBytes);
    EXPECT_EQ(checksum, PageChecksum(dst.data(), kBytes)) << i;
    if (checksum != PageChecksum(src.data(), kBytes)) ++torn;
  }
  stop = true;
  writer.join();
  EXPECT_GT(torn, 0);
}

}  // namespace
}  // namespace kvtier
