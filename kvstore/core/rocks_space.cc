// RocksTier: keeping the data directory within its bound (rocks_tier.h,
// "Space"): the sizer measures it, the collector rewrites old blob files.
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "common/log.h"
#include "common/status_macros.h"
#include "kvstore/core/rocks_tier.h"
#include "rocksdb/db.h"
#include "rocksdb/metadata.h"
#include "rocksdb/options.h"

namespace kvtier::store {
namespace {

constexpr absl::Duration kMeasureEvery = absl::Milliseconds(50);
constexpr absl::Duration kCollectEvery = absl::Milliseconds(200);
// A rewrite may always move this much (see CollectOnce).
constexpr uint64_t kMinMoveBytes = uint64_t{8} << 20;
// Flushes forced near the bound are at most this frequent.
constexpr absl::Duration kFlushEvery = absl::Seconds(1);

// Bytes the regular files directly in `dir` take on disk (allocated blocks,
// as du counts them). A file RocksDB deletes during the walk counts 0.
uint64_t DirectoryBytes(const std::string& dir) {
  uint64_t total = 0;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir, error)) {
    struct stat st;
    if (::lstat(entry.path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      total += static_cast<uint64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

}  // namespace

size_t OldestBlobFilesToCollect(absl::Span<const BlobFileUse> files, uint64_t min_garbage_bytes,
                                uint64_t max_moved_bytes) {
  uint64_t all_garbage = 0;
  for (const BlobFileUse& file : files) all_garbage += std::min(file.garbage_bytes, file.bytes);
  if (min_garbage_bytes == 0 || all_garbage < min_garbage_bytes) return 0;
  size_t longest = 0;
  uint64_t garbage = 0;
  uint64_t live = 0;
  for (size_t k = 1; k <= files.size(); ++k) {
    const BlobFileUse& file = files[k - 1];
    const uint64_t file_garbage = std::min(file.garbage_bytes, file.bytes);
    garbage += file_garbage;
    live += file.bytes - file_garbage;
    // A prefix never ends in a file that is mostly live: moving it would
    // free less than it copies.
    const bool worth_it = 2 * file_garbage >= file.bytes;
    if (live > max_moved_bytes) break;
    if (worth_it && garbage >= min_garbage_bytes / 2 && live <= garbage) longest = k;
  }
  return longest;
}

uint64_t RocksTier::UsedBytes() const {
  return directory_bytes_.load(std::memory_order_relaxed) +
         written_since_measure_.load(std::memory_order_relaxed);
}

bool RocksTier::HasRoomFor(uint64_t bytes) const {
  if (options_.directory_bound_bytes == 0) return true;
  return UsedBytes() + bytes <= options_.directory_bound_bytes;
}

bool RocksTier::WaitOrStop(absl::Duration interval) {
  absl::MutexLock lock(&space_mu_);
  return !space_mu_.AwaitWithTimeout(absl::Condition(&stopping_), interval);
}

void RocksTier::StopSpaceThreads() {
  {
    absl::MutexLock lock(&space_mu_);
    stopping_ = true;
  }
  // A rewrite in progress ends early (CompactRange returns Incomplete).
  db_->DisableManualCompaction();
  if (sizer_.joinable()) sizer_.join();
  if (collector_.joinable()) collector_.join();
}

void RocksTier::Measure() {
  do {
    // Writes during the walk count twice (in the walk and in the sum
    // since), never not at all.
    written_since_measure_.store(0, std::memory_order_relaxed);
    directory_bytes_.store(DirectoryBytes(dir_), std::memory_order_relaxed);
  } while (WaitOrStop(kMeasureEvery));
}

void RocksTier::Collect() {
  if (options_.collect_garbage_bytes == 0 && options_.directory_bound_bytes == 0) return;
  while (WaitOrStop(kCollectEvery)) {
    if (absl::Status s = CollectOnce(); !s.ok()) {
      KVTIER_LOG(WARNING) << "blob garbage collection in " << dir_ << ": " << s;
    }
  }
}

absl::Status RocksTier::CollectOnce() {
  RETURN_IF_ERROR(FlushNearBound());
  return RewriteOldestBlobFiles();
}

absl::Status RocksTier::FlushNearBound() {
  // Deleted pages free their bytes only once their tombstones are flushed
  // and compacted, and flushing also frees WAL files. Without writes
  // nothing would flush, and a directory at its bound (refusing writes)
  // would stay there.
  const uint64_t bound = options_.directory_bound_bytes;
  if (bound == 0 || HasRoomFor(bound / 8) || absl::Now() - last_pressure_flush_ <= kFlushEvery) {
    return absl::OkStatus();
  }
  last_pressure_flush_ = absl::Now();
  RETURN_IF_ERROR(FromRocksStatus(db_->Flush(rocksdb::FlushOptions(), handles_)));
  rocksdb::CompactRangeOptions compact;
  compact.exclusive_manual_compaction = false;
  compact.blob_garbage_collection_policy = rocksdb::BlobGarbageCollectionPolicy::kDisable;
  const rocksdb::Status s = db_->CompactRange(compact, handles_[kPagesIndex], nullptr, nullptr);
  if (s.IsIncomplete()) return absl::OkStatus();  // stopping
  RETURN_IF_ERROR(FromRocksStatus(s));
  pressure_flushes_.fetch_add(1, std::memory_order_relaxed);
  return absl::OkStatus();
}

absl::Status RocksTier::RewriteOldestBlobFiles() {
  const uint64_t bound = options_.directory_bound_bytes;
  rocksdb::ColumnFamilyMetaData meta;
  db_->GetColumnFamilyMetaData(handles_[kPagesIndex], &meta);
  std::vector<BlobFileUse> files;
  files.reserve(meta.blob_files.size());
  for (const rocksdb::BlobMetaData& blob : meta.blob_files) {
    files.push_back(BlobFileUse{.number = blob.blob_file_number,
                                .bytes = blob.total_blob_bytes,
                                .garbage_bytes = blob.garbage_blob_bytes});
  }
  std::sort(files.begin(), files.end(),
            [](const BlobFileUse& a, const BlobFileUse& b) { return a.number < b.number; });
  // The rewrite writes the pages it moves before RocksDB deletes the old
  // files: it may use half the room left under the bound (the rest is for
  // writes meanwhile), and at least kMinMoveBytes, a quarter of the margin
  // between the bound and the directory's documented limit, so that a
  // directory at its bound, full of files partly dead, still gets its
  // room back.
  uint64_t max_moved = UINT64_MAX;
  if (bound != 0) {
    const uint64_t used = UsedBytes();
    max_moved = std::max(used < bound ? (bound - used) / 2 : 0, kMinMoveBytes);
  }
  const size_t oldest =
      OldestBlobFilesToCollect(files, options_.collect_garbage_bytes, max_moved);
  if (oldest == 0) return absl::OkStatus();
  uint64_t garbage = 0;
  uint64_t bytes = 0;
  for (size_t i = 0; i < oldest; ++i) {
    garbage += files[i].garbage_bytes;
    bytes += files[i].bytes;
  }
  rocksdb::CompactRangeOptions compact;
  compact.exclusive_manual_compaction = false;
  // Every table is read, so that every reference into the chosen files
  // moves (the tables are small: keys and blob references).
  compact.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForceOptimized;
  compact.blob_garbage_collection_policy = rocksdb::BlobGarbageCollectionPolicy::kForce;
  // RocksDB rewrites the files older than the one at index
  // floor(cutoff x files): exactly the `oldest` first.
  compact.blob_garbage_collection_age_cutoff =
      (static_cast<double>(oldest) + 0.5) / static_cast<double>(files.size());
  const rocksdb::Status s = db_->CompactRange(compact, handles_[kPagesIndex], nullptr, nullptr);
  if (s.IsIncomplete()) return absl::OkStatus();  // stopping
  RETURN_IF_ERROR(FromRocksStatus(s));
  garbage_collections_.fetch_add(1, std::memory_order_relaxed);
  KVTIER_LOG(DEBUG) << "rewrote the " << oldest << " oldest of " << files.size()
                    << " blob files: " << (garbage >> 20) << " MiB garbage freed, "
                    << ((bytes - garbage) >> 20) << " MiB of pages moved";
  return absl::OkStatus();
}

}  // namespace kvtier::store
