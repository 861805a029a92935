#include "kernels/gather_scatter.h"

#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"

namespace kvtier::kernels {
namespace {

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> v(n);
  for (auto& b : v) b = static_cast<uint8_t>(rng());
  return v;
}

TEST(GatherScatterTest, GatherThenScatterIsTheIdentity) {
  const size_t stride = 1000, page_bytes = 977;  // odd sizes, partial pages
  const uint32_t pool_pages = 64;
  std::vector<uint8_t> pool = RandomBytes(pool_pages * stride, 1);
  std::vector<int32_t> ids(40);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937(2));
  for (auto& id : ids) id = (id * 3 + 5) % pool_pages;  // distinct: 3 is coprime with 64
  std::vector<uint8_t> staging(ids.size() * page_bytes);
  PageCopyArgs a;
  a.pool = pool.data();
  a.page_stride_bytes = stride;
  a.pool_pages = pool_pages;
  a.page_bytes = page_bytes;
  a.page_ids = ids.data();
  a.n_pages = static_cast<uint32_t>(ids.size());
  a.staging = staging.data();
  ThreadPool threads(3);
  ASSERT_TRUE(GatherPagesCpu(a, &threads).ok());
  for (size_t i = 0; i < ids.size(); ++i) {
    ASSERT_EQ(
        0, std::memcmp(staging.data() + i * page_bytes, pool.data() + ids[i] * stride, page_bytes));
  }
  // Scatter into a fresh pool: listed pages equal the original, the rest and
  // the stride gaps keep their old bytes.
  std::vector<uint8_t> fresh = RandomBytes(pool.size(), 3);
  const std::vector<uint8_t> fresh_before = fresh;
  a.pool = fresh.data();
  ASSERT_TRUE(ScatterPagesCpu(a, &threads).ok());
  std::vector<bool> listed(pool_pages, false);
  for (int32_t id : ids) listed[id] = true;
  for (uint32_t p = 0; p < pool_pages; ++p) {
    for (size_t b = 0; b < stride; ++b) {
      const size_t at = p * stride + b;
      ASSERT_EQ(fresh[at], listed[p] && b < page_bytes ? pool[at] : fresh_before[at]) << p;
    }
  }
}

TEST(GatherScatterTest, RejectsBadIdsWithoutCopying) {
  std::vector<uint8_t> pool(4 * 16, 1), staging(2 * 16, 9);
  std::vector<int32_t> ids = {1, 4};
  PageCopyArgs a;
  a.pool = pool.data();
  a.page_stride_bytes = 16;
  a.pool_pages = 4;
  a.page_bytes = 16;
  a.page_ids = ids.data();
  a.n_pages = 2;
  a.staging = staging.data();
  EXPECT_EQ(GatherPagesCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ScatterPagesCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  ids[1] = -1;
  EXPECT_EQ(GatherPagesCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  ids[1] = 2;
  a.page_bytes = 17;  // larger than the stride
  EXPECT_EQ(GatherPagesCpu(a, nullptr).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(staging, std::vector<uint8_t>(32, 9));
  EXPECT_EQ(pool, std::vector<uint8_t>(64, 1));
}

}  // namespace
}  // namespace kvtier::kernels
