#include "common/checksum.h"

#include <gtest/gtest.h>

#if defined(__x86_64__)
#include <cpuid.h>
#endif

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

#if defined(__x86_64__)
// Which extended vector state is in use now (XGETBV with ECX=1): bit 2 the
// upper halves of YMM0-15, bit 6 the upper halves of ZMM0-15 (bit 7,
// ZMM16-31, which glibc's string functions use and legacy SSE cannot
// touch, costs nothing). False when the CPU cannot say.
bool VectorStateInUse(uint64_t* in_use) {
  unsigned int eax, ebx, ecx, edx;
  if (__get_cpuid_count(0xd, 1, &eax, &ebx, &ecx, &edx) == 0 || (eax & (1u << 2)) == 0) {
    return false;
  }
  uint32_t lo, hi;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(1));
  *in_use = (uint64_t{hi} << 32) | lo;
  return true;
}

// Hashing leaves no dirty upper vector state behind: legacy-SSE code that
// runs next on the thread (OpenBLAS's SSE3 kernels) would pay a transition
// penalty on every instruction.
TEST(ChecksumTest, EveryFunctionLeavesTheUpperVectorStateClean) {
  std::mt19937_64 gen(5);
  std::string page(1 << 20, '\0');
  for (char& c : page) c = static_cast<char>(gen());
  std::string copy(page.size(), '\0');
  constexpr uint64_t kUpper = (1u << 2) | (1u << 6);
  uint64_t in_use = 0;
  if (!VectorStateInUse(&in_use)) GTEST_SKIP() << "this CPU does not report its vector state";
  PageChecksum(page.data(), page.size());
  ASSERT_TRUE(VectorStateInUse(&in_use));
  EXPECT_EQ(in_use & kUpper, 0u) << "PageChecksum";
  CopyWithChecksum(copy.data(), page.data(), page.size());
  ASSERT_TRUE(VectorStateInUse(&in_use));
  EXPECT_EQ(in_use & kUpper, 0u) << "CopyWithChecksum";
  CopyAndHashCopy(copy.data(), page.data(), page.size());
  ASSERT_TRUE(VectorStateInUse(&in_use));
  EXPECT_EQ(in_use & kUpper, 0u) << "CopyAndHashCopy";
  std::string appended;
  AppendWithChecksum(&appended, page.data(), page.size());
  ASSERT_TRUE(VectorStateInUse(&in_use));
  EXPECT_EQ(in_use & kUpper, 0u) << "AppendWithChecksum";
  auto* out = reinterpret_cast<uint8_t*>(copy.data());
  const absl::Span<uint8_t> halves[] = {{out, copy.size() / 2},
                                        {out + copy.size() / 2, copy.size() / 2}};
  ScatterAndHashCopy(halves, page.data(), page.size());
  ASSERT_TRUE(VectorStateInUse(&in_use));
  EXPECT_EQ(in_use & kUpper, 0u) << "ScatterAndHashCopy";
}
#endif

TEST(ChecksumTest, CopyWithChecksumCopiesAndHashesLikeOneShot) {
  ExpectCopiesAndHashesLikeOneShot(CopyWithChecksum, 7);
}

TEST(ChecksumTest, CopyAndHashCopyCopiesAndHashesLikeOneShot) {
  ExpectCopiesAndHashesLikeOneShot(CopyAndHashCopy, 13);
}

// The bytes land in the pieces in order, each exactly filled and nothing
// written around them, and the checksum is the one-shot one of the page:
// pieces shorter and longer than a chunk, one piece, empty pieces.
TEST(ChecksumTest, ScatterAndHashCopyFillsThePiecesInOrder) {
  std::mt19937_64 gen(17);
  const std::vector<std::vector<size_t>> splits = {
      {4096},         {0, 4096, 0},       {1, 4095},          {131073, 131071},
      {12288, 12288}, {3, 131072, 5, 7}, {(size_t{1} << 20) + 17, 1}};
  for (const std::vector<size_t>& split : splits) {
    size_t bytes = 0;
    for (size_t n : split) bytes += n;
    std::vector<uint8_t> src(bytes);
    for (uint8_t& b : src) b = static_cast<uint8_t>(gen());
    // Each piece in a buffer of its own with a guard byte on either side.
    std::vector<std::vector<uint8_t>> buffers;
    std::vector<absl::Span<uint8_t>> pieces;
    for (size_t n : split) buffers.emplace_back(n + 2, 0xee);
    for (std::vector<uint8_t>& b : buffers) pieces.emplace_back(b.data() + 1, b.size() - 2);
    EXPECT_EQ(ScatterAndHashCopy(pieces, src.data(), bytes), PageChecksum(src.data(), bytes))
        << bytes;
    size_t at = 0;
    for (const std::vector<uint8_t>& b : buffers) {
      EXPECT_EQ(b.front(), 0xee);
      EXPECT_EQ(b.back(), 0xee);
      EXPECT_TRUE(std::equal(b.begin() + 1, b.end() - 1, src.begin() + at)) << at;
      at += b.size() - 2;
    }
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

TEST(ChecksumTest, ScatterAndHashCopyDescribesTheCopyWhenTheSourceChanges) {
  ExpectChecksumOfTheCopyWhileTheSourceChanges([](const void* src, size_t bytes) {
    std::vector<uint8_t> copied(bytes);
    const size_t cut = bytes / 3 + 5;
    const absl::Span<uint8_t> pieces[] = {{copied.data(), cut},
                                          {copied.data() + cut, bytes - cut}};
    const uint64_t checksum = ScatterAndHashCopy(pieces, src, bytes);
    return std::make_pair(checksum, copied);
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
