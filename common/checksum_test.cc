#include "common/checksum.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
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

}  // namespace
}  // namespace kvtier
