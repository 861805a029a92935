// A damaged data directory: the store starts anyway, sets the damaged
// files aside, counts what it lost, and never returns wrong bytes.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "kvstore/core/rocks_tier.h"
#include "kvstore/core/store.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

namespace fs = std::filesystem;
using testing::AsString;
using testing::Key;
using testing::PageBytes;
using testing::PutPages;
using testing::SmallLayout;
using testing::TempDir;

constexpr uint64_t kPages = 400;  // 3.2 MiB of 8 KiB pages: several flushes

StoreOptions Options(const std::string& dir) {
  StoreOptions o;
  o.data_dir = dir;
  // 8 RAM pages, so nearly every page is demoted; a 32 MiB disk tier
  // flushes RocksDB's memtables, and starts a blob file, every MiB.
  o.ram = {.capacity_bytes = 8 * SmallLayout().PageBytes(), .high_watermark = 1.0,
           .low_watermark = 0.5};
  o.disk = {.capacity_bytes = uint64_t{32} << 20};
  o.verify_on_open = false;
  return o;
}

// Puts kPages pages and closes; *on_disk: how many reached the disk tier
// (the few left only in RAM are gone after any restart). `settle` reopens
// once, so that the WAL is replayed into tables and every page lives in an
// SST and a blob file.
void Fill(const std::string& dir, bool settle, uint64_t* on_disk) {
  {
    auto store = *Store::Open(Options(dir));
    for (uint64_t n = 1; n <= kPages; ++n) ASSERT_TRUE(PutPages(*store, {Key(n)}).ok()) << n;
    *on_disk = store->Stats().disk.pages;
    ASSERT_GT(*on_disk, kPages - 10);
  }
  if (settle) {
    ASSERT_TRUE(Store::Open(Options(dir)).ok());
  }
}

std::vector<fs::path> Files(const std::string& dir, const std::string& prefix,
                            const std::string& extension) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (e.is_regular_file() && name.rfind(prefix, 0) == 0 &&
        (extension.empty() || e.path().extension() == extension)) {
      out.push_back(e.path());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

void FlipByte(const fs::path& file, double where) {
  std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << file;
  f.seekg(0, std::ios::end);
  const auto offset = static_cast<std::streamoff>(static_cast<double>(f.tellg()) * where);
  f.seekg(offset);
  char c = 0;
  f.get(c);
  f.seekp(offset);
  f.put(static_cast<char>(c ^ 0x5a));
}

// The meta family's newest table (the one written last).
fs::path NewestMetaTable(const std::string& dir) {
  for (const fs::path& p : [&] {
         auto v = Files(dir, "", ".sst");
         std::reverse(v.begin(), v.end());
         return v;
       }()) {
    std::ifstream in(p, std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.find(RocksTier::kMetaFamily) != std::string::npos &&
        bytes.find(RocksTier::kPagesFamily) == std::string::npos) {
      return p;
    }
  }
  return {};
}

struct Outcome {
  uint64_t found = 0;      // read back with the right bytes
  uint64_t missing = 0;    // NOT_FOUND or DATA_LOSS
  StoreStats stats;
};

// Opens the damaged directory and reads every page: none may come back
// with wrong bytes.
Outcome Reopen(const std::string& dir) {
  Outcome out;
  absl::StatusOr<std::unique_ptr<Store>> store = Store::Open(Options(dir));
  EXPECT_TRUE(store.ok()) << store.status();
  if (!store.ok()) return out;
  for (uint64_t n = 1; n <= kPages; ++n) {
    absl::StatusOr<std::vector<GetResult>> got = (*store)->BatchGet({Key(n)});
    EXPECT_TRUE(got.ok()) << got.status();
    if (!got.ok()) continue;
    const GetResult& r = (*got)[0];
    if (r.status.ok()) {
      EXPECT_EQ(r.data, AsString(PageBytes(Key(n), SmallLayout()))) << "page " << n;
      ++out.found;
    } else {
      EXPECT_TRUE(r.status.code() == absl::StatusCode::kNotFound ||
                  r.status.code() == absl::StatusCode::kDataLoss)
          << n << ": " << r.status;
      ++out.missing;
    }
  }
  out.stats = (*store)->Stats();
  return out;
}

bool HasQuarantinedFile(const std::string& dir, const std::string& name) {
  if (!fs::exists(dir + "/quarantine")) return false;
  for (const auto& e : fs::recursive_directory_iterator(dir + "/quarantine")) {
    if (e.path().filename() == name) return true;
  }
  return false;
}

TEST(DamagedDirectoryTest, FlippedManifestStartsEmptyAndCountsEveryPage) {
  TempDir dir;
  uint64_t on_disk = 0;
  ASSERT_NO_FATAL_FAILURE(Fill(dir.path(), /*settle=*/true, &on_disk));
  const fs::path manifest = Files(dir.path(), "MANIFEST", "").back();
  ASSERT_NO_FATAL_FAILURE(FlipByte(manifest, 0.5));
  const Outcome o = Reopen(dir.path());
  EXPECT_EQ(o.found, 0u);
  EXPECT_GT(o.stats.set_aside_files, 0u);
  // Every page was in a table whose metadata is still readable.
  EXPECT_EQ(o.stats.lost_pages, on_disk);
  EXPECT_TRUE(HasQuarantinedFile(dir.path(), manifest.filename().string()));
  // The directory works: a new page goes in and comes back.
  auto store = *Store::Open(Options(dir.path()));
  ASSERT_TRUE(PutPages(*store, {Key(9999)}).ok());
  EXPECT_EQ((*store->BatchGet({Key(9999)}))[0].data,
            AsString(PageBytes(Key(9999), SmallLayout())));
}

// RocksDB reads a MANIFEST cut short (a torn last write, or a damaged
// record length) as if it ended there, with no error, and deletes the
// files only the lost part listed: kvtier links them aside first, so the
// loss is seen, set aside and counted.
TEST(DamagedDirectoryTest, TruncatedManifestLosesNothingUncounted) {
  for (const double keep : {0.3, 0.5, 0.7, 0.9}) {
    TempDir dir;
    uint64_t on_disk = 0;
    ASSERT_NO_FATAL_FAILURE(Fill(dir.path(), /*settle=*/true, &on_disk));
    const fs::path manifest = Files(dir.path(), "MANIFEST", "").back();
    fs::resize_file(manifest,
                    static_cast<uintmax_t>(static_cast<double>(fs::file_size(manifest)) * keep));
    const Outcome o = Reopen(dir.path());
    EXPECT_EQ(o.found + o.stats.lost_pages, on_disk) << "kept " << keep;
    if (o.found < on_disk) {
      EXPECT_GT(o.stats.set_aside_files, 0u) << "kept " << keep;
    }
  }
}

TEST(DamagedDirectoryTest, MissingCurrentRecoversEveryPage) {
  TempDir dir;
  uint64_t on_disk = 0;
  ASSERT_NO_FATAL_FAILURE(Fill(dir.path(), /*settle=*/true, &on_disk));
  fs::remove(dir.path() + "/CURRENT");
  const Outcome o = Reopen(dir.path());
  EXPECT_EQ(o.found, on_disk);
  EXPECT_EQ(o.stats.lost_pages, 0u);
  EXPECT_GT(o.stats.set_aside_files, 0u);
  // Opened as it is from now on.
  auto again = Store::Open(Options(dir.path()));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->Stats().set_aside_files, 0u);
}

TEST(DamagedDirectoryTest, FlippedMetadataTableIsSetAsideAndItsPagesCounted) {
  TempDir dir;
  uint64_t on_disk = 0;
  ASSERT_NO_FATAL_FAILURE(Fill(dir.path(), /*settle=*/true, &on_disk));
  const fs::path table = NewestMetaTable(dir.path());
  ASSERT_FALSE(table.empty());
  ASSERT_NO_FATAL_FAILURE(FlipByte(table, 0.1));
  const Outcome o = Reopen(dir.path());
  EXPECT_GT(o.stats.set_aside_files, 0u);
  EXPECT_TRUE(HasQuarantinedFile(dir.path(), table.filename().string()));
  EXPECT_LT(o.found, on_disk);
  EXPECT_EQ(o.found + o.stats.lost_pages, on_disk)
      << "found " << o.found << ", lost " << o.stats.lost_pages;
}

TEST(DamagedDirectoryTest, MissingBlobFileLosesItsPagesOnly) {
  TempDir dir;
  uint64_t on_disk = 0;
  ASSERT_NO_FATAL_FAILURE(Fill(dir.path(), /*settle=*/true, &on_disk));
  const std::vector<fs::path> blobs = Files(dir.path(), "", ".blob");
  ASSERT_GE(blobs.size(), 2u);
  fs::remove(blobs.front());
  const Outcome o = Reopen(dir.path());
  EXPECT_GT(o.found, 0u);
  EXPECT_GT(o.missing, 0u);
  // Each read of a page whose bytes are gone drops it as lost (the pages
  // that were only in RAM are simply absent).
  EXPECT_EQ(o.stats.lost_pages, o.missing - (kPages - on_disk));
  EXPECT_EQ(o.stats.set_aside_files, 0u);
}

TEST(DamagedDirectoryTest, CorruptWalRecordIsSkippedAndCounted) {
  TempDir dir;
  uint64_t on_disk = 0;
  ASSERT_NO_FATAL_FAILURE(Fill(dir.path(), /*settle=*/false, &on_disk));
  const std::vector<fs::path> logs = Files(dir.path(), "", ".log");
  ASSERT_FALSE(logs.empty());
  ASSERT_GT(fs::file_size(logs.back()), 64u << 10);
  ASSERT_NO_FATAL_FAILURE(FlipByte(logs.back(), 0.5));
  const Outcome o = Reopen(dir.path());
  EXPECT_EQ(o.stats.set_aside_files, 0u);
  EXPECT_GT(o.stats.lost_pages, 0u);
  // Only the damaged record's pages are gone, and all of them are counted.
  EXPECT_EQ(o.found + o.stats.lost_pages, on_disk)
      << "found " << o.found << ", lost " << o.stats.lost_pages;
}

// Recovery that cannot replay the WAL (best-efforts recovery, or starting
// empty) still counts the pages that lived only there.
TEST(DamagedDirectoryTest, PagesOnlyInTheWalOfADamagedDirectoryAreCounted) {
  for (const char* damage : {"no CURRENT", "flipped MANIFEST"}) {
    TempDir dir;
    uint64_t on_disk = 0;
    ASSERT_NO_FATAL_FAILURE(Fill(dir.path(), /*settle=*/false, &on_disk));
    ASSERT_FALSE(Files(dir.path(), "", ".log").empty());
    if (std::string(damage) == "no CURRENT") {
      fs::remove(dir.path() + "/CURRENT");
    } else {
      ASSERT_NO_FATAL_FAILURE(FlipByte(Files(dir.path(), "MANIFEST", "").back(), 0.5));
    }
    const Outcome o = Reopen(dir.path());
    EXPECT_GT(o.stats.set_aside_files, 0u) << damage;
    EXPECT_EQ(o.found + o.stats.lost_pages, on_disk)
        << damage << ": found " << o.found << ", lost " << o.stats.lost_pages;
  }
}

TEST(DamagedDirectoryTest, ADirectoryInUseIsNotDamageAndIsLeftAlone) {
  TempDir dir;
  uint64_t on_disk = 0;
  ASSERT_NO_FATAL_FAILURE(Fill(dir.path(), /*settle=*/true, &on_disk));
  auto first = Store::Open(Options(dir.path()));
  ASSERT_TRUE(first.ok());
  absl::StatusOr<std::unique_ptr<Store>> second = Store::Open(Options(dir.path()));
  EXPECT_FALSE(second.ok());
  EXPECT_NE(second.status().code(), absl::StatusCode::kDataLoss) << second.status();
  EXPECT_FALSE(fs::exists(dir.path() + "/quarantine"));
}

}  // namespace
}  // namespace kvtier::store
