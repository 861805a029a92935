// The disk cap bounds the data directory, not only the pages the index
// counts: under churn of 8-16x the cap, with and without pinned pages in
// every blob file, RocksDB's write-ahead log, memtables and blob garbage
// keep the directory within 1.1 x the cap + 64 MiB (rocks_tier.h, "Space").
// Before the WAL was bounded, a 16 MiB cap grew a 279 MiB directory; before
// the collector, pinned pages kept every blob file they were in alive.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <system_error>

#include "absl/time/clock.h"
#include "kvstore/core/store.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::Key;
using testing::PutPages;
using testing::TempDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kPage = 64 << 10;

// Sum of file sizes; RocksDB may delete a file while we walk, which counts
// as 0 bytes.
uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code ec;
  for (const auto& entry : std::filesystem::recursive_directory_iterator(dir, ec)) {
    const uintmax_t size = std::filesystem::file_size(entry.path(), ec);
    if (!ec) total += size;
  }
  return total;
}

// 64 tokens x 4 heads x 64 dims x f16 x (K, V) = 64 KiB.
PageLayout Layout64K() {
  return PageLayout{.page_size = 64, .n_kv_heads = 4, .head_dim = 64, .dtype = DType::kF16};
}

struct Churn {
  uint64_t disk_cap = 0;
  uint64_t written = 0;
  // Pin one page in this many (0: none), for the whole run: each pinned
  // page keeps the blob file it was written to from dying whole.
  uint64_t pin_every = 0;
};

class DiskCapTest : public ::testing::TestWithParam<Churn> {};

TEST_P(DiskCapTest, ChurnKeepsTheDirectoryNearTheCap) {
  const Churn churn = GetParam();
  constexpr uint64_t kBatch = 16;
  TempDir dir;
  StoreOptions o;
  o.data_dir = dir.path();
  o.ram = {.capacity_bytes = 2 * kMiB, .high_watermark = 0.9, .low_watermark = 0.5};
  o.disk = {.capacity_bytes = churn.disk_cap, .high_watermark = 0.9, .low_watermark = 0.7};
  o.verify_on_open = false;
  auto store = *Store::Open(o);
  uint64_t peak = 0;
  uint64_t pinned = 0;
  uint64_t n = 0;
  for (; n < churn.written / kPage; n += kBatch) {
    std::vector<PageKey> keys;
    for (uint64_t i = 0; i < kBatch; ++i) keys.push_back(Key(n + i));
    ASSERT_TRUE(PutPages(*store, keys, Layout64K()).ok()) << n;
    if (churn.pin_every != 0 && n % churn.pin_every == 0) {
      // A pin writes its page through to disk; while the directory is at
      // its bound (this loop writes faster than RocksDB frees blob files)
      // that is RESOURCE_EXHAUSTED, and a client tries again, as here.
      absl::StatusOr<PinId> pin = store->Pin(0, {Key(n)}, 3'600'000, PinId{});
      for (int tries = 0; absl::IsResourceExhausted(pin.status()) && tries < 1000; ++tries) {
        absl::SleepFor(absl::Milliseconds(10));
        pin = store->Pin(0, {Key(n)}, 3'600'000, PinId{});
      }
      ASSERT_TRUE(pin.ok()) << n << ": " << pin.status();
      ++pinned;
    }
    if (n % 64 == 0) peak = std::max(peak, DirectoryBytes(dir.path()));
  }
  peak = std::max(peak, DirectoryBytes(dir.path()));
  StoreStats stats = store->Stats();
  EXPECT_LE(stats.disk.used_bytes, churn.disk_cap);
  // Pinned pages in RAM are on disk too (a pin writes through); no other
  // page is in both tiers here (nothing is read back).
  EXPECT_EQ(stats.dropped_pages, n - (stats.disk.pages + stats.ram.pages - stats.ram.pinned_pages))
      << "pages only leave by eviction";
  EXPECT_LE(peak, churn.disk_cap + churn.disk_cap / 10 + 64 * kMiB)
      << "peak " << (peak >> 20) << " MiB";
  EXPECT_EQ(stats.data_dir_bound_bytes, churn.disk_cap + churn.disk_cap / 10 + 32 * kMiB);
  if (churn.pin_every != 0) {
    // Only rewriting the files that hold pinned pages frees the rest.
    EXPECT_GT(stats.disk_garbage_collections, 0u);
  }
  // Every pinned page and the newest page are still readable.
  std::vector<PageKey> check = {Key(n - 1)};
  for (uint64_t p = 0; churn.pin_every != 0 && p < n; p += churn.pin_every) check.push_back(Key(p));
  EXPECT_EQ(check.size(), pinned + 1);
  auto got = store->BatchGet(check);
  ASSERT_TRUE(got.ok());
  for (size_t i = 0; i < check.size(); ++i) {
    EXPECT_TRUE((*got)[i].status.ok()) << check[i].DebugString() << ": " << (*got)[i].status;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Churns, DiskCapTest,
    ::testing::Values(
        // 16x the cap written; pages die in the order they were written.
        Churn{.disk_cap = 16 * kMiB, .written = 256 * kMiB},
        // A pinned page in every 48: no blob file ever dies whole.
        Churn{.disk_cap = 16 * kMiB, .written = 256 * kMiB, .pin_every = 48},
        Churn{.disk_cap = 64 * kMiB, .written = 512 * kMiB},
        Churn{.disk_cap = 64 * kMiB, .written = 512 * kMiB, .pin_every = 48}),
    [](const ::testing::TestParamInfo<Churn>& info) {
      return std::string(info.param.pin_every == 0 ? "Fifo" : "PinnedScattered") +
             std::to_string(info.param.disk_cap >> 20) + "MiB";
    });

}  // namespace
}  // namespace kvtier::store
