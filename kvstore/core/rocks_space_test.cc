// The disk tier's space keeping (rocks_space.cc): which blob files the
// collector rewrites, and the directory bound HasRoomFor enforces. The
// bound under churn is checked end to end in tiered_store_caps_test.cc.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "kvstore/core/rocks_tier.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::TempDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// Files numbered 1.. from {bytes, garbage} in MiB.
std::vector<BlobFileUse> Files(std::vector<std::pair<uint64_t, uint64_t>> mib) {
  std::vector<BlobFileUse> files;
  uint64_t number = 1;
  for (const auto& [bytes, garbage] : mib) {
    files.push_back({.number = number++, .bytes = bytes * kMiB, .garbage_bytes = garbage * kMiB});
  }
  return files;
}

TEST(OldestBlobFilesToCollectTest, NothingBelowTheGarbageThreshold) {
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{8, 3}, {8, 0}}), 4 * kMiB), 0u);
  EXPECT_EQ(OldestBlobFilesToCollect({}, 4 * kMiB), 0u);
  // 0 means never.
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{8, 8}}), 0), 0u);
}

TEST(OldestBlobFilesToCollectTest, LruChurnStopsWhereTheLiveFilesBegin) {
  // Two dead files (as yet undropped), one half dead, two all live.
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{8, 8}, {8, 8}, {8, 4}, {8, 0}, {8, 0}}), 8 * kMiB),
            3u);
}

TEST(OldestBlobFilesToCollectTest, PinnedPagesInEveryFileRewriteThemAll) {
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{16, 15}, {16, 15}, {16, 15}, {16, 15}}), 4 * kMiB),
            4u);
}

TEST(OldestBlobFilesToCollectTest, AMostlyLiveOldFileIsMovedWhenTheGarbageBehindItPays) {
  // Moving the first file's 7 MiB frees the 17 MiB of all three.
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{8, 1}, {8, 8}, {8, 8}}), 4 * kMiB), 3u);
  // Here no prefix frees as much as it moves.
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{8, 2}, {8, 2}, {8, 2}}), 4 * kMiB), 0u);
}

TEST(OldestBlobFilesToCollectTest, TooLittleGarbageInAnyPrefixIsNotWorthARewrite) {
  // 6 MiB of garbage in all, but the prefixes that free half the threshold
  // end in a mostly live file.
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{8, 1}, {8, 1}, {8, 1}, {8, 3}}), 6 * kMiB), 0u);
}

TEST(OldestBlobFilesToCollectTest, MovesNoMoreThanTheRoomAllows) {
  // Each file 1 MiB live: with room to move 2 MiB, two files; with none,
  // none.
  const auto files = Files({{8, 7}, {8, 7}, {8, 7}, {8, 7}});
  EXPECT_EQ(OldestBlobFilesToCollect(files, 4 * kMiB), 4u);
  EXPECT_EQ(OldestBlobFilesToCollect(files, 4 * kMiB, 2 * kMiB), 2u);
  EXPECT_EQ(OldestBlobFilesToCollect(files, 4 * kMiB, kMiB / 2), 0u);
  // Dead files move nothing and always go.
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{8, 8}, {8, 8}, {8, 4}}), 4 * kMiB, 0), 2u);
}

TEST(OldestBlobFilesToCollectTest, GarbagePastTheFileSizeCountsAsTheFile) {
  EXPECT_EQ(OldestBlobFilesToCollect(Files({{4, 9}, {4, 0}}), 4 * kMiB), 1u);
}

TEST(RocksSpaceTest, HasRoomForSaysNoPastTheBoundOnceMeasured) {
  TempDir dir;
  RocksTierOptions options;
  options.directory_bound_bytes = 1;  // any file is past it
  auto tier = RocksTier::Open(dir.path(), options);
  ASSERT_TRUE(tier.ok()) << tier.status();
  EXPECT_EQ((*tier)->directory_bound_bytes(), 1u);
  // The sizer measures at once and then every 50 ms.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while ((*tier)->directory_bytes() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
  }
  ASSERT_GT((*tier)->directory_bytes(), 0u) << "the directory was never measured";
  EXPECT_FALSE((*tier)->HasRoomFor(0));
  EXPECT_FALSE((*tier)->HasRoomFor(4096));
}

// A directory past its bound refuses writes, so nothing would flush: the
// collector flushes and compacts, and deleted pages free their bytes.
TEST(RocksSpaceTest, ADirectoryAtItsBoundShrinksWithoutWrites) {
  TempDir dir;
  RocksTierOptions options;  // 64 MiB memtables: 16 MiB never flush alone
  options.blob_file_bytes = kMiB;
  options.directory_bound_bytes = 8 * kMiB;
  auto tier = RocksTier::Open(dir.path(), options);
  ASSERT_TRUE(tier.ok()) << tier.status();
  const PageLayout layout{.page_size = 64, .n_kv_heads = 4, .head_dim = 64, .dtype = DType::kF16};
  std::vector<PageKey> keys;
  std::vector<std::vector<uint8_t>> bytes;
  for (uint64_t n = 0; n < 256; ++n) {  // 16 MiB of 64 KiB pages
    keys.push_back(testing::Key(n));
    bytes.push_back(testing::PageBytes(keys.back(), layout));
  }
  std::vector<RocksTier::PageWrite> writes;
  for (size_t i = 0; i < keys.size(); ++i) {
    writes.push_back({.key = keys[i],
                      .meta = {.layout = layout, .bytes = bytes[i].size(), .checksum = 1},
                      .bytes = bytes[i]});
  }
  ASSERT_TRUE((*tier)->Put(writes).ok());
  ASSERT_TRUE((*tier)->Delete(keys).ok());
  // First the flush the bound forces, then a size measured after it: the
  // sizer walks the directory every 50 ms, and a walk from before the
  // pages were written would pass for a small directory.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while ((*tier)->pressure_flushes() == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  const absl::Time flushed = absl::Now();
  while ((absl::Now() - flushed < absl::Milliseconds(200) ||
          (*tier)->directory_bytes() > 6 * kMiB) &&
         absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  // What is left is RocksDB's MANIFEST, preallocated 4 MiB, and small
  // files; the 16 MiB of pages (WAL, blob files) are gone.
  EXPECT_LE((*tier)->directory_bytes(), 6 * kMiB);
  EXPECT_GT((*tier)->pressure_flushes(), 0u);
}

TEST(RocksSpaceTest, NoBoundAlwaysHasRoom) {
  TempDir dir;
  auto tier = RocksTier::Open(dir.path());
  ASSERT_TRUE(tier.ok()) << tier.status();
  EXPECT_EQ((*tier)->directory_bound_bytes(), 0u);
  EXPECT_TRUE((*tier)->HasRoomFor(uint64_t{1} << 50));
}

TEST(RocksSpaceTest, ForCapacityBoundsTheDirectoryAtTheDocumentedFigure) {
  for (uint64_t cap : {16 * kMiB, 256 * kMiB, 8192 * kMiB}) {
    const RocksTierOptions o = RocksTierOptions::ForCapacity(cap);
    // 1.1 x the cap + 64 MiB, less 32 MiB for writes the bound cannot stop.
    EXPECT_EQ(o.directory_bound_bytes, cap + cap / 10 + 32 * kMiB) << cap;
    // The parts RocksDB keeps besides live pages fit under the 64 MiB and
    // the tenth: WAL, one memtable, garbage before a rewrite, one blob file.
    EXPECT_LE(o.max_wal_bytes + o.write_buffer_bytes + o.collect_garbage_bytes + o.blob_file_bytes,
              cap / 10 + 32 * kMiB)
        << cap;
  }
}

}  // namespace
}  // namespace kvtier::store
