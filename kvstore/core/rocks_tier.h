// RocksTier: the disk tier, pages in RocksDB.
//
// Three column families:
//   "pages" (integrated BlobDB: values of 4 KiB and more live in blob files,
//           so compaction does not rewrite page bytes):
//           PageKey::Encode() -> u8 format version (1) || page bytes
//   "meta": PageKey::Encode() -> u8 format version (1) || layout16
//           || LE-u64 page bytes || LE-u64 checksum          (33 bytes)
//   "pins": BE-u64 pin id -> u8 format version (1) || LE-i64 expiry in
//           Unix milliseconds || LE-u64 owner tenant || PinId::Bytes()
//           (33 bytes; 9, without the owner, from before tenants: such a
//           pin belongs to tenant 0 and gets a new public id)
//           BE-u64 pin id || PageKey::Encode() -> u8 format version (1)
//           (one record per pinned page; big-endian ids keep a pin's
//           records together, after its expiry record)
// Both records of a page are written in one WriteBatch, so a page is on disk
// with its metadata or not at all. Recovery iterates "meta" and "pins".
// Writes go through the WAL without fsync: pages survive a process restart,
// and a machine crash may lose the most recent writes (the store is a cache).
//
// Space: page bytes are written twice before they settle (WAL, then a blob
// file at flush), and a deleted page's bytes stay in their blob file until
// RocksDB drops the file (all garbage) or a compaction moves its live pages
// elsewhere. RocksTierOptions::ForCapacity scales every size with the disk
// cap, and two threads keep the directory within its bound (1.1 x the cap
// + 64 MiB, less a margin; rocks_space.cc):
//   - the sizer measures the directory every 50 ms; HasRoomFor adds the
//     bytes written since and says no past the bound, so the store drops
//     unpinned pages instead of writing them (StoreStats::disk_space_refusals);
//   - the collector rewrites the oldest blob files once their garbage passes
//     collect_garbage_bytes (OldestBlobFilesToCollect), never moving more
//     live bytes than it frees, nor than half the room left under the bound
//     but at least 8 MiB (a rewrite writes the new files before the old ones
//     go: unbounded, rewrites took a soak's directory to 1.2x its bound;
//     with no floor, a directory at its bound full of partly dead files
//     could never rewrite them, and the disk tier emptied); and when the directory is within an eighth
//     of its bound it flushes every family and compacts (at most once a
//     second), because deleted pages count as garbage only once their
//     tombstones are compacted, and a directory refusing writes would
//     otherwise never flush.
// RocksDB's own blob GC is off: it moved the live pages of the oldest
// quarter of the files at every compaction, pages that LRU eviction was
// about to delete anyway, and those copies held a 256 MiB cap's directory
// at 1.3x the bound (ops/bench/overload.py). The WAL is bounded (RocksDB
// flushes the families that keep the oldest WAL alive; without the bound
// the small meta family kept every WAL file, page bytes included, and a
// 16 MiB cap grew a 279 MiB directory), and so are the MANIFEST and info
// logs. tiered_store_caps_test.cc checks the bound under churn, with and
// without pinned pages in every blob file.
//
// Thread-safety: all methods are thread-safe (RocksDB is; the space
// figures are atomics).
#ifndef KVTIER_KVSTORE_CORE_ROCKS_TIER_H_
#define KVTIER_KVSTORE_CORE_ROCKS_TIER_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "kvstore/core/pin_id.h"

namespace rocksdb {
class ColumnFamilyHandle;
class DB;
class Status;
class WalFilter;
}  // namespace rocksdb

namespace kvtier::store {

// The one conversion of RocksDB errors into the kvtier error model.
absl::Status FromRocksStatus(const rocksdb::Status& status);

// How RocksDB is sized. From a disk cap: RocksTierOptions::ForCapacity.
struct RocksTierOptions {
  // Memtable size of the pages family; also the unit in which page bytes
  // reach blob files.
  uint64_t write_buffer_bytes = uint64_t{64} << 20;
  uint64_t blob_file_bytes = uint64_t{256} << 20;
  // Bound on all WAL files together; past it RocksDB flushes the families
  // that keep the oldest WAL alive.
  uint64_t max_wal_bytes = uint64_t{256} << 20;
  // The data directory's bound: past it HasRoomFor says no. 0: no bound.
  uint64_t directory_bound_bytes = 0;
  // Blob garbage past which the collector rewrites the oldest blob files.
  // 0: never.
  uint64_t collect_garbage_bytes = 0;

  // Sizes scaled to a disk cap (see "Space" above).
  static RocksTierOptions ForCapacity(uint64_t capacity_bytes);
};

// One blob file as the garbage collector sees it.
struct BlobFileUse {
  uint64_t number = 0;  // RocksDB's file number: lower is older
  uint64_t bytes = 0;   // blob bytes in the file, garbage included
  uint64_t garbage_bytes = 0;
};

// How many of the oldest blob files (sorted by number) to rewrite, or 0:
// none while their garbage is below min_garbage_bytes in all. The longest
// prefix that frees at least half of min_garbage_bytes, moves no more live
// bytes than it frees nor than max_moved_bytes, and ends in a file at least
// half garbage: under LRU churn the oldest files are mostly garbage and the
// newest all live, so it stops where the live ones begin.
size_t OldestBlobFilesToCollect(absl::Span<const BlobFileUse> files, uint64_t min_garbage_bytes,
                                uint64_t max_moved_bytes = UINT64_MAX);

// A pin as the "pins" family holds it.
struct StoredPin {
  uint64_t id = 0;  // the local id (PinTable)
  int64_t expiry_unix_ms = 0;
  uint64_t tenant = 0;
  // Zero for a pin recorded before pins had public ids.
  PinId public_id;
  std::vector<PageKey> keys;
};

struct PageMeta {
  PageLayout layout;
  uint64_t bytes = 0;
  uint64_t checksum = 0;
};

// What RocksTier::Open found in a data directory, and did about damage.
struct RecoveryReport {
  // The metadata of every page found, read once at Open (the probe for
  // damage), so that the store builds its index from it without a second
  // scan. Records that did not decode were deleted and are counted in
  // malformed_records.
  std::vector<std::pair<PageKey, PageMeta>> pages;
  uint64_t malformed_records = 0;
  // Every pin recorded, expired ones included, in id order. Pin records
  // that did not decode were deleted and are counted here.
  std::vector<StoredPin> pins;
  uint64_t malformed_pin_records = 0;
  // The damage RocksDB reported; empty when the directory opened as it was.
  std::string damage;
  // Where the files of a damaged directory were set aside (hard links, made
  // before anything was changed), and how many.
  std::string quarantine_dir;
  uint64_t quarantined_files = 0;
  // Pages known lost to the damage: WAL records skipped (sequence gaps),
  // page records left without metadata, and, when the directory had to
  // start empty, the metadata records still readable in its tables.
  uint64_t lost_pages = 0;
  // The directory could not be opened even in part and starts empty.
  bool started_empty = false;
};

class RocksTier {
 public:
  static constexpr char kPagesFamily[] = "pages";
  static constexpr char kMetaFamily[] = "meta";
  static constexpr char kPinsFamily[] = "pins";
  // Every column family, in the order the database was created with them:
  // a family's index here is its RocksDB id and its handle's index.
  // ("default" is RocksDB's own, unused.)
  static constexpr std::array<const char*, 4> kFamilies = {"default", kPagesFamily, kMetaFamily,
                                                           kPinsFamily};
  static constexpr size_t kPagesIndex = 1;
  static constexpr size_t kMetaIndex = 2;
  static constexpr size_t kPinsIndex = 3;
  static constexpr uint8_t kFormatVersion = 1;
  static constexpr size_t kMetaValueBytes = 1 + PageLayout::kEncodedBytes + 8 + 8;
  // Page values at least this large go to blob files.
  static constexpr uint64_t kMinBlobBytes = 4096;

  struct PageWrite {
    PageKey key;
    PageMeta meta;
    absl::Span<const uint8_t> bytes;  // meta.bytes long
  };

  // Opens or creates the database in `dir`, and starts on a damaged one
  // (rocks_recovery.cc): WAL records that fail their checksums are skipped;
  // when RocksDB cannot open the directory, or its metadata cannot be read
  // in full, every file is first linked into dir/quarantine/<time>/, a
  // table named in the error is set aside, and RocksDB recovers the newest
  // consistent state it can (best-efforts recovery, which drops the WAL);
  // page records without metadata are then deleted. When even that fails
  // the directory starts empty. `report` (optional) says what happened.
  // Errors that are not damage (a lock held by another process, no
  // permission) are returned as they are, and nothing is changed.
  static absl::StatusOr<std::unique_ptr<RocksTier>> Open(const std::string& dir,
                                                          const RocksTierOptions& options = {},
                                                          RecoveryReport* report = nullptr);
  ~RocksTier();
  RocksTier(const RocksTier&) = delete;
  RocksTier& operator=(const RocksTier&) = delete;

  // Writes every page with its metadata, in atomic batches of at most
  // 4 MiB (one page each at least); on an error the batches already
  // written are deleted again, so the call writes all or nothing.
  absl::Status Put(absl::Span<const PageWrite> pages);
  // The page bytes (without header). NOT_FOUND when absent; DATA_LOSS when
  // the stored value is malformed or its blob file is missing. Does not
  // verify the checksum.
  absl::StatusOr<std::string> Get(const PageKey& key);
  // The metadata of one page; NOT_FOUND, or DATA_LOSS when malformed.
  absl::StatusOr<PageMeta> GetMeta(const PageKey& key);
  // Deletes pages and their metadata in one atomic batch; absent keys are
  // no-ops.
  absl::Status Delete(absl::Span<const PageKey> keys);
  // Calls fn for every page's metadata in key order. Records that do not
  // decode are deleted and counted in *malformed (may be null).
  absl::Status ForEachMeta(absl::FunctionRef<void(const PageKey&, const PageMeta&)> fn,
                           uint64_t* malformed);

  // Whether `bytes` more of pages fit in the directory's bound: the size
  // last measured plus twice what was written since (WAL and blob file).
  // Always true without a bound.
  bool HasRoomFor(uint64_t bytes) const;
  // The directory's size on disk as last measured (files directly in it;
  // a quarantine folder is the operator's); 0 before the first measure.
  uint64_t directory_bytes() const { return directory_bytes_.load(std::memory_order_relaxed); }
  uint64_t directory_bound_bytes() const { return options_.directory_bound_bytes; }
  // Rewrites of old blob files the collector has run, and flushes it forced
  // near the bound.
  uint64_t garbage_collections() const {
    return garbage_collections_.load(std::memory_order_relaxed);
  }
  uint64_t pressure_flushes() const { return pressure_flushes_.load(std::memory_order_relaxed); }

  // rocks_pins.cc. Records pin_id's expiry and owner and adds `added` to
  // its pages, in one atomic write.
  absl::Status SavePin(uint64_t pin_id, const StoredPin& pin, absl::Span<const PageKey> added);
  // Deletes every record of pin_id (one range tombstone); no-op if absent.
  absl::Status DeletePin(uint64_t pin_id);
  // Every recorded pin in id order. Records that do not decode, and page
  // records of a pin without an expiry record, are deleted and counted in
  // *malformed (may be null).
  absl::Status ReadPins(std::vector<StoredPin>* pins, uint64_t* malformed);

  static std::string EncodeMeta(const PageMeta& meta);
  static absl::StatusOr<PageMeta> DecodeMeta(std::string_view value);

 private:
  // Opened with automatic compactions off; Start turns them on and starts
  // the sizer and the collector.
  RocksTier(std::unique_ptr<rocksdb::WalFilter> wal_filter, std::unique_ptr<rocksdb::DB> db,
            std::vector<rocksdb::ColumnFamilyHandle*> handles, std::string dir,
            const RocksTierOptions& options);
  absl::Status Start();
  // File names (no folder) of the table and blob files the database holds.
  std::vector<std::string> LiveFileNames();

  // rocks_recovery.cc: Open's ladder, before Start.
  static absl::StatusOr<std::unique_ptr<RocksTier>> OpenOrRecover(const std::string& dir,
                                                                  const RocksTierOptions& options,
                                                                  RecoveryReport* report);
  // One attempt to open `dir`; *skipped_wal_entries (may be null) counts
  // the entries of WAL records skipped as corrupt, from sequence gaps.
  static absl::StatusOr<std::unique_ptr<RocksTier>> OpenOnce(const std::string& dir,
                                                              const RocksTierOptions& options,
                                                              bool best_efforts,
                                                              uint64_t* skipped_wal_entries);
  // Deletes page records that have no metadata; returns their encoded keys.
  absl::StatusOr<std::vector<std::string>> DropPagesWithoutMeta();

  // rocks_space.cc: the threads that keep the directory within its bound.
  // Measures the directory every kMeasureEvery until stopping.
  void Measure() ABSL_LOCKS_EXCLUDED(space_mu_);
  // Collects blob garbage when due, checking every kCollectEvery.
  void Collect() ABSL_LOCKS_EXCLUDED(space_mu_);
  // One round of the collector: FlushNearBound, then
  // RewriteOldestBlobFiles.
  absl::Status CollectOnce();
  // Flushes every family and compacts the pages, when the directory is
  // within an eighth of its bound (at most once every kFlushEvery).
  absl::Status FlushNearBound();
  // Rewrites the oldest blob files when OldestBlobFilesToCollect says so.
  absl::Status RewriteOldestBlobFiles();
  // The directory as last measured plus what was written since (twice).
  uint64_t UsedBytes() const;
  // Waits `interval` or until stopping; false once stopping.
  bool WaitOrStop(absl::Duration interval) ABSL_LOCKS_EXCLUDED(space_mu_);
  void StopSpaceThreads() ABSL_LOCKS_EXCLUDED(space_mu_);

  // Const after construction. The WAL filter is in db_'s options: it goes
  // after db_ is closed.
  std::unique_ptr<rocksdb::WalFilter> wal_filter_;
  std::unique_ptr<rocksdb::DB> db_;
  // One per kFamilies entry; owned, destroyed before db_.
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  const std::string dir_;
  const RocksTierOptions options_;

  std::atomic<uint64_t> directory_bytes_{0};
  // Twice the page bytes written since the last measure began.
  std::atomic<uint64_t> written_since_measure_{0};
  std::atomic<uint64_t> garbage_collections_{0};
  std::atomic<uint64_t> pressure_flushes_{0};
  // Collector thread only.
  absl::Time last_pressure_flush_ = absl::InfinitePast();
  absl::Mutex space_mu_;
  bool stopping_ ABSL_GUARDED_BY(space_mu_) = false;
  std::thread sizer_;
  std::thread collector_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_ROCKS_TIER_H_
