#include "kvstore/core/rocks_tier.h"

#include <algorithm>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "common/endian.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "rocksdb/db.h"
#include "rocksdb/metadata.h"
#include "rocksdb/options.h"
#include "rocksdb/slice.h"
#include "rocksdb/wal_filter.h"
#include "rocksdb/write_batch.h"

namespace kvtier::store {
namespace {


rocksdb::Slice AsSlice(std::string_view s) { return rocksdb::Slice(s.data(), s.size()); }

rocksdb::ColumnFamilyOptions PagesFamilyOptions(const RocksTierOptions& tier) {
  rocksdb::ColumnFamilyOptions options;
  options.enable_blob_files = true;
  options.min_blob_size = RocksTier::kMinBlobBytes;
  options.blob_file_size = tier.blob_file_bytes;
  // KV pages are dense floats; compression would cost CPU for little gain.
  options.compression = rocksdb::kNoCompression;
  options.blob_compression_type = rocksdb::kNoCompression;
  // No blob GC in automatic compactions: the collector (rocks_space.cc)
  // chooses which files to rewrite. Every flush is compacted at once: the
  // tables hold only keys and blob references, so this is cheap, and it is
  // what registers deleted pages as garbage, so that a blob file whose
  // pages are all gone is dropped one flush later.
  options.enable_blob_garbage_collection = false;
  options.level0_file_num_compaction_trigger = 1;
  options.write_buffer_size = tier.write_buffer_bytes;
  return options;
}

}  // namespace

absl::Status FromRocksStatus(const rocksdb::Status& status) {
  if (status.ok()) return absl::OkStatus();
  const std::string message = absl::StrCat("rocksdb: ", status.ToString());
  switch (status.code()) {
    case rocksdb::Status::kNotFound:
      return absl::NotFoundError(message);
    case rocksdb::Status::kCorruption:
      return absl::DataLossError(message);
    case rocksdb::Status::kInvalidArgument:
      return absl::InvalidArgumentError(message);
    case rocksdb::Status::kNotSupported:
      return absl::UnimplementedError(message);
    case rocksdb::Status::kBusy:
    case rocksdb::Status::kTimedOut:
    case rocksdb::Status::kTryAgain:
      return absl::UnavailableError(message);
    case rocksdb::Status::kAborted:
      return absl::AbortedError(message);
    case rocksdb::Status::kIOError:
      if (status.IsNoSpace()) return absl::ResourceExhaustedError(message);
      return absl::InternalError(message);
    default:
      return absl::InternalError(message);
  }
}

RocksTierOptions RocksTierOptions::ForCapacity(uint64_t capacity_bytes) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  RocksTierOptions options;
  options.write_buffer_bytes = std::clamp(capacity_bytes / 32, kMiB, 64 * kMiB);
  options.blob_file_bytes = std::clamp(capacity_bytes / 64, kMiB, 64 * kMiB);
  options.max_wal_bytes = std::clamp(capacity_bytes / 32, 4 * kMiB, 128 * kMiB);
  // 1.1 x the cap + 64 MiB, less 32 MiB for writes the bound cannot stop:
  // those between two measures, memtables already taken, and a rewrite's
  // floor (rocks_space.cc). With 16 MiB less, a soak with pins and reads
  // all over the disk passed 1.1 x the cap + 64 MiB by 2%.
  options.directory_bound_bytes = capacity_bytes + capacity_bytes / 10 + 32 * kMiB;
  options.collect_garbage_bytes = std::max(2 * options.blob_file_bytes, capacity_bytes / 16);
  return options;
}

namespace {

// Counts the entries of WAL records that recovery skipped as corrupt: each
// write batch consumes one sequence number per entry, so a record that
// follows a skipped one starts past the expected number. (A damaged last
// record leaves no gap behind it and is not counted.)
class WalGapCounter final : public rocksdb::WalFilter {
 public:
  WalProcessingOption LogRecordFound(unsigned long long /*log_number*/,
                                     const std::string& /*log_file_name*/,
                                     const rocksdb::WriteBatch& batch,
                                     rocksdb::WriteBatch* /*new_batch*/,
                                     bool* /*batch_changed*/) override {
    // A batch's data starts with its LE-u64 sequence number and LE-u32
    // entry count (RocksDB's WriteBatch format).
    const std::string& rep = batch.Data();
    if (rep.size() >= 12) {
      const uint64_t sequence = LoadLe64(reinterpret_cast<const uint8_t*>(rep.data()));
      if (next_ != 0 && sequence > next_) skipped_ += sequence - next_;
      next_ = std::max(next_, sequence + batch.Count());
    }
    return WalProcessingOption::kContinueProcessing;
  }
  const char* Name() const override { return "kvtier-wal-gap-counter"; }
  uint64_t skipped() const { return skipped_; }

 private:
  uint64_t next_ = 0;
  uint64_t skipped_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<RocksTier>> RocksTier::OpenOnce(const std::string& dir,
                                                               const RocksTierOptions& options,
                                                               bool best_efforts,
                                                               uint64_t* skipped_wal_entries) {
  rocksdb::DBOptions db_options;
  // A WAL record that fails its checksum is skipped, not the end of
  // recovery: each record is whole pages with their metadata, so the
  // records after it are as good as before.
  db_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kSkipAnyCorruptedRecords;
  // RocksDB keeps the filter in its options (and serializes them whenever
  // they change), so it lives as long as the database.
  auto gaps = std::make_unique<WalGapCounter>();
  db_options.wal_filter = gaps.get();
  db_options.best_efforts_recovery = best_efforts;
  db_options.create_if_missing = true;
  db_options.create_missing_column_families = true;
  db_options.max_background_jobs = 2;
  // The small "meta" family rarely fills its memtable; without this bound
  // it would keep every WAL file, page bytes included, alive.
  db_options.max_total_wal_size = options.max_wal_bytes;
  // Every flush and compaction appends to the MANIFEST, and RocksDB's info
  // log grows without end by default: both are bounded.
  db_options.max_manifest_file_size = 4 << 20;
  db_options.max_log_file_size = 4 << 20;
  db_options.keep_log_file_num = 2;
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const char* name : kFamilies) families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  families[kPagesIndex].options = PagesFamilyOptions(options);
  // No compaction deletes a file until Start: Open compares the files the
  // database holds with those the directory held (rocks_recovery.cc).
  for (rocksdb::ColumnFamilyDescriptor& family : families) {
    family.options.disable_auto_compactions = true;
  }
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw_db = nullptr;
  RETURN_IF_ERROR(FromRocksStatus(rocksdb::DB::Open(db_options, dir, families, &handles, &raw_db)));
  if (skipped_wal_entries != nullptr) *skipped_wal_entries = gaps->skipped();
  return std::unique_ptr<RocksTier>(
      new RocksTier(std::move(gaps), std::unique_ptr<rocksdb::DB>(raw_db), handles, dir, options));
}

RocksTier::RocksTier(std::unique_ptr<rocksdb::WalFilter> wal_filter,
                     std::unique_ptr<rocksdb::DB> db,
                     std::vector<rocksdb::ColumnFamilyHandle*> handles, std::string dir,
                     const RocksTierOptions& options)
    : wal_filter_(std::move(wal_filter)),
      db_(std::move(db)),
      handles_(std::move(handles)),
      dir_(std::move(dir)),
      options_(options) {}

absl::Status RocksTier::Start() {
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    RETURN_IF_ERROR(
        FromRocksStatus(db_->SetOptions(handle, {{"disable_auto_compactions", "false"}})));
  }
  sizer_ = std::thread([this] { Measure(); });
  collector_ = std::thread([this] { Collect(); });
  return absl::OkStatus();
}

std::vector<std::string> RocksTier::LiveFileNames() {
  std::vector<std::string> names;
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    rocksdb::ColumnFamilyMetaData meta;
    db_->GetColumnFamilyMetaData(handle, &meta);
    for (const rocksdb::LevelMetaData& level : meta.levels) {
      for (const rocksdb::SstFileMetaData& table : level.files) {
        names.push_back(std::filesystem::path(table.relative_filename).filename().string());
      }
    }
    for (const rocksdb::BlobMetaData& blob : meta.blob_files) {
      names.push_back(std::filesystem::path(blob.blob_file_name).filename().string());
    }
  }
  return names;
}

RocksTier::~RocksTier() {
  StopSpaceThreads();
  // Failures at shutdown cannot be returned; they are logged.
  for (rocksdb::ColumnFamilyHandle* handle : handles_) {
    absl::Status s = FromRocksStatus(db_->DestroyColumnFamilyHandle(handle));
    if (!s.ok()) {
      KVTIER_LOG(ERROR) << "closing a column family: " << s;
    }
  }
  absl::Status s = FromRocksStatus(db_->Close());
  if (!s.ok()) {
    KVTIER_LOG(ERROR) << "closing the page database: " << s;
  }
}

std::string RocksTier::EncodeMeta(const PageMeta& meta) {
  std::string out(kMetaValueBytes, '\0');
  auto* p = reinterpret_cast<uint8_t*>(out.data());
  p[0] = kFormatVersion;
  meta.layout.Encode(p + 1);
  StoreLe64(p + 1 + PageLayout::kEncodedBytes, meta.bytes);
  StoreLe64(p + 9 + PageLayout::kEncodedBytes, meta.checksum);
  return out;
}

absl::StatusOr<PageMeta> RocksTier::DecodeMeta(std::string_view value) {
  if (value.size() != kMetaValueBytes) {
    return absl::DataLossError(absl::StrCat("page metadata of ", value.size(), " bytes"));
  }
  const auto* p = reinterpret_cast<const uint8_t*>(value.data());
  if (p[0] != kFormatVersion) {
    return absl::DataLossError(absl::StrCat("page metadata format ", int{p[0]}));
  }
  PageMeta meta;
  absl::Status layout = PageLayout::Decode(p + 1, &meta.layout);
  if (!layout.ok()) return absl::DataLossError(absl::StrCat("page metadata: ", layout.message()));
  meta.bytes = LoadLe64(p + 1 + PageLayout::kEncodedBytes);
  meta.checksum = LoadLe64(p + 9 + PageLayout::kEncodedBytes);
  if (meta.bytes != meta.layout.PageBytes()) {
    return absl::DataLossError("page metadata byte count does not match its layout");
  }
  return meta;
}

absl::Status RocksTier::Put(absl::Span<const PageWrite> pages) {
  // A write batch copies its page bytes, and RocksDB's memtable copies
  // them again: a demotion of a whole watermark gap in one batch held
  // tens of MiB per demoting thread. Batches of at most kMaxBatchBytes.
  constexpr uint64_t kMaxBatchBytes = uint64_t{4} << 20;
  const char header = static_cast<char>(kFormatVersion);
  size_t written = 0;  // pages in batches already written
  size_t next = 0;
  while (next < pages.size()) {
    rocksdb::WriteBatch batch;
    uint64_t bytes = 0;
    size_t end = next;
    for (; end < pages.size() && (end == next || bytes + pages[end].bytes.size() <= kMaxBatchBytes);
         ++end) {
      const PageWrite& page = pages[end];
      const std::string key = page.key.Encode();
      const std::string meta = EncodeMeta(page.meta);
      // SliceParts: the page bytes go into the batch without a staging copy.
      rocksdb::Slice key_slice = AsSlice(key);
      rocksdb::Slice value_parts[2] = {
          rocksdb::Slice(&header, 1),
          rocksdb::Slice(reinterpret_cast<const char*>(page.bytes.data()), page.bytes.size())};
      RETURN_IF_ERROR(FromRocksStatus(batch.Put(handles_[kPagesIndex],
                                                rocksdb::SliceParts(&key_slice, 1),
                                                rocksdb::SliceParts(value_parts, 2))));
      RETURN_IF_ERROR(
          FromRocksStatus(batch.Put(handles_[kMetaIndex], AsSlice(key), AsSlice(meta))));
      bytes += page.bytes.size();
    }
    // Twice: in the WAL, and in a blob file once flushed, until RocksDB
    // deletes the WAL file.
    written_since_measure_.fetch_add(2 * bytes, std::memory_order_relaxed);
    if (absl::Status s = FromRocksStatus(db_->Write(rocksdb::WriteOptions(), &batch)); !s.ok()) {
      // All or nothing for the caller: take back the batches written.
      std::vector<PageKey> undo;
      for (size_t i = 0; i < written; ++i) undo.push_back(pages[i].key);
      if (absl::Status d = Delete(undo); !d.ok()) {
        KVTIER_LOG(ERROR) << "cannot take back " << undo.size() << " pages after a failed write: "
                          << d;
      }
      return s;
    }
    written = end;
    next = end;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> RocksTier::Get(const PageKey& key) {
  rocksdb::PinnableSlice value;
  const rocksdb::Status status =
      db_->Get(rocksdb::ReadOptions(), handles_[kPagesIndex], AsSlice(key.Encode()), &value);
  if (status.IsIOError() && status.IsPathNotFound()) {
    // The blob file that held the bytes is gone from the directory.
    return absl::DataLossError(absl::StrCat("page ", key.DebugString(), ": ", status.ToString()));
  }
  RETURN_IF_ERROR(FromRocksStatus(status));
  if (value.size() < 1 || static_cast<uint8_t>(value.data()[0]) != kFormatVersion) {
    return absl::DataLossError(absl::StrCat("malformed page value for ", key.DebugString()));
  }
  return std::string(value.data() + 1, value.size() - 1);
}

absl::StatusOr<PageMeta> RocksTier::GetMeta(const PageKey& key) {
  rocksdb::PinnableSlice value;
  RETURN_IF_ERROR(FromRocksStatus(
      db_->Get(rocksdb::ReadOptions(), handles_[kMetaIndex], AsSlice(key.Encode()), &value)));
  return DecodeMeta(value.ToStringView());
}

absl::Status RocksTier::Delete(absl::Span<const PageKey> keys) {
  if (keys.empty()) return absl::OkStatus();
  rocksdb::WriteBatch batch;
  for (const PageKey& key : keys) {
    const std::string encoded = key.Encode();
    RETURN_IF_ERROR(FromRocksStatus(batch.Delete(handles_[kPagesIndex], AsSlice(encoded))));
    RETURN_IF_ERROR(FromRocksStatus(batch.Delete(handles_[kMetaIndex], AsSlice(encoded))));
  }
  return FromRocksStatus(db_->Write(rocksdb::WriteOptions(), &batch));
}

absl::Status RocksTier::ForEachMeta(absl::FunctionRef<void(const PageKey&, const PageMeta&)> fn,
                                    uint64_t* malformed) {
  std::vector<std::string> bad_keys;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), handles_[kMetaIndex]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      absl::StatusOr<PageKey> key = PageKey::Decode(it->key().ToStringView());
      absl::StatusOr<PageMeta> meta = DecodeMeta(it->value().ToStringView());
      if (!key.ok() || !meta.ok()) {
        bad_keys.push_back(it->key().ToString());
        continue;
      }
      fn(*key, *meta);
    }
    RETURN_IF_ERROR(FromRocksStatus(it->status()));
  }
  if (malformed != nullptr) *malformed = bad_keys.size();
  if (bad_keys.empty()) return absl::OkStatus();
  rocksdb::WriteBatch batch;
  for (const std::string& key : bad_keys) {
    RETURN_IF_ERROR(FromRocksStatus(batch.Delete(handles_[kPagesIndex], key)));
    RETURN_IF_ERROR(FromRocksStatus(batch.Delete(handles_[kMetaIndex], key)));
  }
  return FromRocksStatus(db_->Write(rocksdb::WriteOptions(), &batch));
}

absl::StatusOr<std::vector<std::string>> RocksTier::DropPagesWithoutMeta() {
  std::vector<std::string> orphans;
  {
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), handles_[kPagesIndex]));
    std::string meta;
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const rocksdb::Status s =
          db_->Get(rocksdb::ReadOptions(), handles_[kMetaIndex], it->key(), &meta);
      if (s.IsNotFound()) {
        orphans.push_back(it->key().ToString());
      } else {
        RETURN_IF_ERROR(FromRocksStatus(s));
      }
    }
    RETURN_IF_ERROR(FromRocksStatus(it->status()));
  }
  rocksdb::WriteBatch batch;
  for (const std::string& key : orphans) {
    RETURN_IF_ERROR(FromRocksStatus(batch.Delete(handles_[kPagesIndex], key)));
  }
  RETURN_IF_ERROR(FromRocksStatus(db_->Write(rocksdb::WriteOptions(), &batch)));
  return orphans;
}

}  // namespace kvtier::store
