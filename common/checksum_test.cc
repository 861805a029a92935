#include "common/checksum.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace kvtier {
namespace {

// Sizes around the chunk boundary and odd tails: `copy` copies exactly and
// returns the one-shot checksum of the same bytes.
template <typename Copy>
void ExpectCopiesAndHashesLikeOneShot(Copy copy, uint64_t seed) {
  std::mt19937_64 gen(seed);
  for (size_t bytes : {size_t{0}, size_t{1}, size_t{4096}, size_t{131071}, size_t{131072},
                       size_t{131073}, size_t{1} << 20, (size_t{4} << 20) + 17}) {
    std::vector<uint8_t> src(bytes);
    for (uint8_t& b : src) b = static_cast<uint8_t>(gen());
    std::vector<uint8_t> dst(bytes + 1, 0xee);
    EXPECT_EQ(copy(dst.data(), src.data(), bytes), PageChecksum(src.data(), bytes)) << bytes;
    EXPECT_TRUE(std::equal(src.begin(), src.end(), dst.begin())) << bytes;
    EXPECT_EQ(dst[bytes], 0xee) << "wrote past the end at " << bytes;
  }
}

TEST(ChecksumTest, CopyWithChecksumCopiesAndHashesLikeOneShot) {
  ExpectCopiesAndHashesLikeOneShot(CopyWithChecksum, 7);
}

TEST(ChecksumTest, CopyAndHashCopyCopiesAndHashesLikeOneShot) {
  ExpectCopiesAndHashesLikeOneShot(CopyAndHashCopy, 13);
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
// meanwhile, a local lane's segment): `copy` (returning its checksum and
// the bytes it wrote) describes the bytes it wrote, whatever they are, so
// a torn copy fails its check instead of passing with the source's.
template <typename Copy>
void ExpectChecksumOfTheCopyWhileTheSourceChanges(Copy copy) {
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
    const auto [checksum, copied] = copy(src.data(), kBytes);
    EXPECT_EQ(checksum, PageChecksum(copied.data(), copied.size())) << i;
    if (checksum != PageChecksum(src.data(), kBytes)) ++torn;
  }
  stop = true;
  writer.join();
  // The writer did change the source under some copies (else the test
  // showed nothing).
  EXPECT_GT(torn, 0);
}

TEST(ChecksumTest, AppendWithChecksumDescribesTheCopyWhenTheSourceChanges) {
  ExpectChecksumOfTheCopyWhileTheSourceChanges([](const void* src, size_t bytes) {
    std::string appended;
    const uint64_t checksum = AppendWithChecksum(&appended, src, bytes);
    return std::make_pair(checksum, appended);
  });
}

TEST(ChecksumTest, CopyAndHashCopyDescribesTheCopyWhenTheSourceChanges) {
  ExpectChecksumOfTheCopyWhileTheSourceChanges([](const void* src, size_t bytes) {
    std::string copied(bytes, '\0');
    const uint64_t checksum = CopyAndHashCopy(copied.data(), src, bytes);
    return std::make_pair(checksum, copied);
  });
}

}  // namespace
}  // namespace kvtier
