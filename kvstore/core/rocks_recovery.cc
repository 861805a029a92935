// RocksTier::Open: opening a data directory, damaged or not.
//
// The ladder, each step taken only when the one before failed with damage
// (RocksDB's Corruption; other errors, such as a lock another process
// holds, are returned unchanged and nothing is touched):
//   1. Open as it is. WAL records that fail their checksums are skipped
//      (kSkipAnyCorruptedRecords) and counted from the sequence gaps they
//      leave; then the metadata family is read in full (into the report,
//      from which the store builds its index). RocksDB reads a MANIFEST
//      whose last record is damaged as if it ended before it, opens an
//      older state and deletes the files only the lost record listed, with
//      no error: so the table and blob files are hard-linked aside before
//      the open (compactions stay off until Start), and those the opened
//      database does not hold are set aside in quarantine with the old
//      MANIFEST, and the pages their metadata names that did not come back
//      are counted lost. (Files a crash left behind, such as a flush's
//      output not yet recorded, are set aside the same way.)
//   2. Set aside: every file is hard-linked into dir/quarantine/<time>/
//      (no copy; the damaged bytes stay there for an operator), a table
//      named in the error is removed from the directory, and RocksDB's
//      best-efforts recovery opens the newest state whose files are all
//      present. That recovery drops the WAL, so the WAL is first replayed
//      (metadata only) into a scratch database in the quarantine folder,
//      and the pages it held that do not come back are counted lost; page
//      records whose metadata did not survive are deleted and counted lost.
//   3. Start empty: the directory's files (all linked in quarantine) are
//      removed and a new database is created; the pages whose metadata is
//      still readable in the quarantined tables or WAL are counted lost.
// Every page that does come back is still verified against its checksum
// by the store (in the background and on every read), so damage that
// RocksDB did not notice is never served either.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <system_error>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/function_ref.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kvstore/core/rocks_tier.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_reader.h"
#include "rocksdb/comparator.h"
#include "rocksdb/table_properties.h"
#include "rocksdb/wal_filter.h"
#include "rocksdb/write_batch.h"

namespace kvtier::store {
namespace {

namespace fs = std::filesystem;

bool IsDamage(const absl::Status& status) {
  return status.code() == absl::StatusCode::kDataLoss;
}

// The table file a RocksDB error names ("... in /dir/000027.sst offset
// ..."), or "" when it names none.
std::string TableNamedIn(absl::string_view message) {
  const size_t end = message.find(".sst");
  if (end == absl::string_view::npos) return "";
  const size_t start = message.rfind(' ', end);
  const size_t from = start == absl::string_view::npos ? 0 : start + 1;
  return std::string(message.substr(from, end + 4 - from));
}

// A new folder dir/quarantine/<UTC time>-<pid>/.
absl::StatusOr<std::string> NewQuarantineFolder(const std::string& dir) {
  const std::string folder = absl::StrCat(
      dir, "/quarantine/", absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now(), absl::UTCTimeZone()),
      "-", getpid());
  std::error_code error;
  fs::create_directories(folder, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot create ", folder, ": ", error.message()));
  }
  return folder;
}

// Hard-links the regular files of `dir` whose names `keep` accepts into
// `folder`; returns their names.
absl::StatusOr<std::vector<std::string>> LinkFiles(
    const std::string& dir, const fs::path& folder,
    absl::FunctionRef<bool(const std::string& name)> keep) {
  std::vector<std::string> names;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_regular_file() || !keep(name)) continue;
    fs::create_hard_link(entry.path(), folder / name, error);
    if (error) {
      return absl::InternalError(absl::StrCat("cannot link ", entry.path().string(), " into ",
                                              folder.string(), ": ", error.message()));
    }
    names.push_back(name);
  }
  if (error) return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", error.message()));
  return names;
}

// Hard-links every regular file of `dir` (but LOCK) into a new quarantine
// folder; returns the folder and the count.
absl::StatusOr<std::pair<std::string, uint64_t>> LinkIntoQuarantine(const std::string& dir) {
  ASSIGN_OR_RETURN(const std::string folder, NewQuarantineFolder(dir));
  ASSIGN_OR_RETURN(const std::vector<std::string> linked,
                   LinkFiles(dir, folder, [](const std::string& name) { return name != "LOCK"; }));
  return std::make_pair(folder, uint64_t{linked.size()});
}

// Removes every regular file of `dir` but LOCK (each is linked in
// quarantine already).
absl::Status RemoveDatabaseFiles(const std::string& dir) {
  std::error_code error;
  std::vector<fs::path> files;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    if (entry.is_regular_file() && entry.path().filename() != "LOCK") files.push_back(entry.path());
  }
  for (const fs::path& file : files) {
    fs::remove(file, error);
    if (error) {
      return absl::InternalError(absl::StrCat("cannot remove ", file.string(), ": ", error.message()));
    }
  }
  return absl::OkStatus();
}

// Encoded keys of the pages whose metadata records are still readable in
// the tables of `folder`. A page deleted after a table was written is
// there too, so counts made from this err high.
absl::flat_hash_set<std::string> TableMetaKeys(const std::string& folder) {
  absl::flat_hash_set<std::string> keys;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, error)) {
    if (entry.path().extension() != ".sst") continue;
    rocksdb::SstFileReader reader{rocksdb::Options()};
    if (!reader.Open(entry.path().string()).ok()) continue;
    std::shared_ptr<const rocksdb::TableProperties> properties = reader.GetTableProperties();
    if (properties == nullptr || properties->column_family_name != RocksTier::kMetaFamily) continue;
    std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) keys.insert(it->key().ToString());
  }
  return keys;
}

// Keeps only the metadata family's entries of each WAL record (the page
// bytes are not needed to know which pages the WAL held).
class MetaOnlyWalFilter final : public rocksdb::WalFilter {
 public:
  explicit MetaOnlyWalFilter(uint32_t meta_family_id) : meta_id_(meta_family_id) {}
  WalProcessingOption LogRecordFound(unsigned long long /*log_number*/,
                                     const std::string& /*log_file_name*/,
                                     const rocksdb::WriteBatch& batch,
                                     rocksdb::WriteBatch* new_batch,
                                     bool* batch_changed) override {
    Copier copier(meta_id_, new_batch);
    if (!batch.Iterate(&copier).ok()) return WalProcessingOption::kIgnoreCurrentRecord;
    *batch_changed = true;
    return WalProcessingOption::kContinueProcessing;
  }
  const char* Name() const override { return "kvtier-meta-only"; }

 private:
  class Copier final : public rocksdb::WriteBatch::Handler {
   public:
    Copier(uint32_t meta_id, rocksdb::WriteBatch* out) : meta_id_(meta_id), out_(out) {}
    rocksdb::Status PutCF(uint32_t family, const rocksdb::Slice& key,
                          const rocksdb::Slice& value) override {
      return family == meta_id_ ? out_->Put(Family(), key, value) : rocksdb::Status::OK();
    }
    rocksdb::Status DeleteCF(uint32_t family, const rocksdb::Slice& key) override {
      return family == meta_id_ ? out_->Delete(Family(), key) : rocksdb::Status::OK();
    }
    // Everything else kvtier never writes to the metadata family.
    void LogData(const rocksdb::Slice& /*blob*/) override {}

   private:
    // The replay database has the same families in the same order, so the
    // id carries over; WriteBatch needs a handle, which the id stands for.
    rocksdb::ColumnFamilyHandle* Family() { return &handle_; }
    class IdHandle final : public rocksdb::ColumnFamilyHandle {
     public:
      explicit IdHandle(uint32_t id) : id_(id) {}
      const std::string& GetName() const override { return name_; }
      uint32_t GetID() const override { return id_; }
      rocksdb::Status GetDescriptor(rocksdb::ColumnFamilyDescriptor*) override {
        return rocksdb::Status::NotSupported();
      }
      const rocksdb::Comparator* GetComparator() const override {
        return rocksdb::BytewiseComparator();
      }

     private:
      uint32_t id_;
      std::string name_ = RocksTier::kMetaFamily;
    };
    uint32_t meta_id_;
    rocksdb::WriteBatch* out_;
    IdHandle handle_{meta_id_};
  };
  uint32_t meta_id_;
};

// File number of a RocksDB file name ("000012.log", "MANIFEST-000005"), or 0.
uint64_t FileNumberOf(const std::string& name) {
  const size_t digits = name.find_first_of("0123456789");
  if (digits == std::string::npos) return 0;
  uint64_t number = 0;
  for (size_t i = digits; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) {
    number = number * 10 + static_cast<uint64_t>(name[i] - '0');
  }
  return number;
}

// Encoded keys of the pages whose metadata the WAL files of `folder` (a
// quarantine folder) still hold, as the WAL leaves them: RocksDB replays
// them into a new database in folder/wal-replay/, which is removed after.
// Records that fail their checksums are skipped.
absl::StatusOr<absl::flat_hash_set<std::string>> WalMetaKeys(const std::string& folder) {
  std::vector<fs::path> logs;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, error)) {
    if (entry.path().extension() == ".log") logs.push_back(entry.path());
  }
  std::sort(logs.begin(), logs.end(), [](const fs::path& a, const fs::path& b) {
    return FileNumberOf(a.filename().string()) < FileNumberOf(b.filename().string());
  });
  absl::flat_hash_set<std::string> keys;
  if (logs.empty()) return keys;
  const fs::path replay = fs::path(folder) / "wal-replay";
  fs::remove_all(replay, error);
  std::vector<rocksdb::ColumnFamilyDescriptor> families;
  for (const char* name : RocksTier::kFamilies) {
    families.emplace_back(name, rocksdb::ColumnFamilyOptions());
  }
  auto open = [&](rocksdb::DBOptions db_options) -> absl::Status {
    db_options.create_if_missing = true;
    db_options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyHandle*> handles;
    rocksdb::DB* raw = nullptr;
    RETURN_IF_ERROR(FromRocksStatus(
        rocksdb::DB::Open(db_options, replay.string(), families, &handles, &raw)));
    std::unique_ptr<rocksdb::DB> db(raw);
    std::unique_ptr<rocksdb::Iterator> it(
        db->NewIterator(rocksdb::ReadOptions(), handles[RocksTier::kMetaIndex]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) keys.insert(it->key().ToString());
    absl::Status status = FromRocksStatus(it->status());
    it.reset();
    for (rocksdb::ColumnFamilyHandle* handle : handles) {
      status.Update(FromRocksStatus(db->DestroyColumnFamilyHandle(handle)));
    }
    status.Update(FromRocksStatus(db->Close()));
    return status;
  };
  // A new database, then the old WAL files linked in after its own
  // numbers, in their order: the next open replays them.
  RETURN_IF_ERROR(open(rocksdb::DBOptions()));
  uint64_t next = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(replay, error)) {
    next = std::max(next, FileNumberOf(entry.path().filename().string()));
  }
  for (const fs::path& log : logs) {
    char name[32];
    std::snprintf(name, sizeof(name), "%06llu.log", static_cast<unsigned long long>(++next));
    fs::create_hard_link(log, replay / name, error);
    if (error) {
      return absl::InternalError(absl::StrCat("cannot link ", log.string(), ": ", error.message()));
    }
  }
  MetaOnlyWalFilter filter(RocksTier::kMetaIndex);
  rocksdb::DBOptions replay_options;
  replay_options.wal_recovery_mode = rocksdb::WALRecoveryMode::kSkipAnyCorruptedRecords;
  replay_options.wal_filter = &filter;
  keys.clear();
  const absl::Status replayed = open(replay_options);
  fs::remove_all(replay, error);
  RETURN_IF_ERROR(replayed);
  return keys;
}

// `keys` (encoded) less those among `present`.
absl::flat_hash_set<std::string> Missing(absl::flat_hash_set<std::string> keys,
                                         const std::vector<std::pair<PageKey, PageMeta>>& present) {
  for (const auto& [key, meta] : present) keys.erase(key.Encode());
  return keys;
}

constexpr char kStagingPrefix[] = ".opening-";

bool IsTableOrBlob(const std::string& name) {
  const std::string extension = fs::path(name).extension().string();
  return extension == ".sst" || extension == ".blob";
}

bool IsManifest(const std::string& name) { return name.rfind("MANIFEST-", 0) == 0; }

// Hard links of a directory's table and blob files and its MANIFEST, made
// before RocksDB opens it (which writes a new MANIFEST and deletes the
// files no longer listed), in dir/.opening-<pid>/; the folder goes with
// this object.
class Staged {
 public:
  static absl::StatusOr<std::unique_ptr<Staged>> Make(const std::string& dir) {
    auto staged = std::unique_ptr<Staged>(
        new Staged(fs::path(dir) / absl::StrCat(kStagingPrefix, getpid())));
    std::error_code error;
    fs::remove_all(staged->folder_, error);
    if (!error) fs::create_directories(staged->folder_, error);
    if (error) {
      return absl::InternalError(
          absl::StrCat("cannot make ", staged->folder_.string(), ": ", error.message()));
    }
    ASSIGN_OR_RETURN(std::vector<std::string> linked,
                     LinkFiles(dir, staged->folder_, [](const std::string& name) {
                       return IsManifest(name) || IsTableOrBlob(name);
                     }));
    for (std::string& name : linked) {
      (IsManifest(name) ? staged->manifests_ : staged->names_).push_back(std::move(name));
    }
    return staged;
  }
  ~Staged() {
    std::error_code error;
    fs::remove_all(folder_, error);
  }
  Staged(const Staged&) = delete;
  Staged& operator=(const Staged&) = delete;

  const fs::path& folder() const { return folder_; }
  // Table and blob files.
  const std::vector<std::string>& names() const { return names_; }
  const std::vector<std::string>& manifests() const { return manifests_; }

 private:
  explicit Staged(fs::path folder) : folder_(std::move(folder)) {}
  const fs::path folder_;
  std::vector<std::string> names_;
  std::vector<std::string> manifests_;
};

// Staging folders of opens that crashed (the caller holds the database's
// lock, so no other open is running).
void RemoveStaleStaging(const std::string& dir) {
  std::error_code error;
  std::vector<fs::path> stale;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    if (entry.is_directory() && entry.path().filename().string().rfind(kStagingPrefix, 0) == 0) {
      stale.push_back(entry.path());
    }
  }
  for (const fs::path& folder : stale) fs::remove_all(folder, error);
}

// After an open that succeeded: the staged files the database does not
// hold (dropped by a damaged MANIFEST, or left by a job a crash
// interrupted) go into a quarantine folder, and the pages their metadata
// names that did not come back are counted lost.
absl::Status SetAsideDropped(const std::string& dir, const Staged& staged,
                             const std::vector<std::string>& live, RecoveryReport* report) {
  const absl::flat_hash_set<std::string> held(live.begin(), live.end());
  std::vector<std::string> dropped;
  for (const std::string& name : staged.names()) {
    if (!held.contains(name)) dropped.push_back(name);
  }
  std::error_code error;
  if (!dropped.empty()) {
    ASSIGN_OR_RETURN(const std::string folder, NewQuarantineFolder(dir));
    // The MANIFEST that did not list them goes too, for an operator.
    const size_t tables = dropped.size();
    dropped.insert(dropped.end(), staged.manifests().begin(), staged.manifests().end());
    for (const std::string& name : dropped) {
      fs::rename(staged.folder() / name, fs::path(folder) / name, error);
      if (error) {
        return absl::InternalError(
            absl::StrCat("cannot move ", name, " into ", folder, ": ", error.message()));
      }
    }
    report->quarantine_dir = folder;
    report->quarantined_files = dropped.size();
    report->lost_pages = Missing(TableMetaKeys(folder), report->pages).size();
    report->damage = absl::StrCat(tables,
                                  " table and blob files in the directory are not part of the "
                                  "database (a damaged MANIFEST, or files of a job a crash "
                                  "interrupted)");
    KVTIER_LOG(ERROR) << "data directory " << dir << ": " << report->damage << "; set aside in "
                      << folder << ", " << report->lost_pages << " pages lost";
  }
  return absl::OkStatus();
}

// Reads the metadata of every page into report->pages: the probe for
// damage the open did not notice (DATA_LOSS naming the file).
absl::Status ReadMeta(RocksTier& tier, RecoveryReport* report) {
  report->pages.clear();
  RETURN_IF_ERROR(tier.ForEachMeta(
      [&](const PageKey& key, const PageMeta& meta) { report->pages.emplace_back(key, meta); },
      &report->malformed_records));
  return tier.ReadPins(&report->pins, &report->malformed_pin_records);
}

}  // namespace

absl::StatusOr<std::unique_ptr<RocksTier>> RocksTier::Open(const std::string& dir,
                                                           const RocksTierOptions& options,
                                                           RecoveryReport* report) {
  RecoveryReport local;
  if (report == nullptr) report = &local;
  *report = RecoveryReport();
  ASSIGN_OR_RETURN(std::unique_ptr<RocksTier> tier, OpenOrRecover(dir, options, report));
  RETURN_IF_ERROR(tier->Start());
  return tier;
}

absl::StatusOr<std::unique_ptr<RocksTier>> RocksTier::OpenOrRecover(const std::string& dir,
                                                                    const RocksTierOptions& options,
                                                                    RecoveryReport* report) {
  // Each page record and its metadata are one batch of two entries.
  constexpr uint64_t kEntriesPerPage = 2;

  // 1. As it is.
  uint64_t skipped_entries = 0;
  absl::Status damage;
  {
    ASSIGN_OR_RETURN(const std::unique_ptr<Staged> staged, Staged::Make(dir));
    absl::StatusOr<std::unique_ptr<RocksTier>> tier =
        OpenOnce(dir, options, /*best_efforts=*/false, &skipped_entries);
    if (tier.ok()) damage = ReadMeta(**tier, report);
    if (tier.ok() && damage.ok()) {
      // A MANIFEST whose last record is damaged reads as if it ended
      // before that record: RocksDB opens an older state and deletes the
      // files only the lost records named. Those were linked aside first.
      RETURN_IF_ERROR(SetAsideDropped(dir, *staged, (*tier)->LiveFileNames(), report));
      RemoveStaleStaging(dir);
      if (skipped_entries > 0) {
        report->damage = absl::StrCat("WAL records that failed their checksums: ",
                                      skipped_entries, " entries skipped");
        report->lost_pages += (skipped_entries + kEntriesPerPage - 1) / kEntriesPerPage;
        KVTIER_LOG(ERROR) << "data directory " << dir << ": " << report->damage << "; "
                          << report->lost_pages << " pages lost";
      }
      return tier;
    }
    if (!tier.ok()) damage = tier.status();
    if (!IsDamage(damage)) return damage;
  }
  report->damage = std::string(damage.message());
  KVTIER_LOG(ERROR) << "data directory " << dir << " is damaged: " << damage
                    << "; setting its files aside and recovering what is left";

  // 2. Set aside, and recover what the remaining files hold.
  ASSIGN_OR_RETURN(auto quarantine, LinkIntoQuarantine(dir));
  report->quarantine_dir = quarantine.first;
  report->quarantined_files = quarantine.second;
  // What the WAL held, read before anything replaces it.
  absl::flat_hash_set<std::string> wal_keys;
  if (absl::StatusOr<absl::flat_hash_set<std::string>> keys = WalMetaKeys(report->quarantine_dir);
      keys.ok()) {
    wal_keys = *std::move(keys);
  } else {
    KVTIER_LOG(ERROR) << "cannot read the WAL of " << dir << " (" << keys.status()
                      << "); pages only in it are lost uncounted";
  }
  if (const std::string table = TableNamedIn(damage.message()); !table.empty()) {
    std::error_code error;
    fs::remove(table, error);  // linked in quarantine; best-efforts recovery goes without it
  }
  {
    absl::StatusOr<std::unique_ptr<RocksTier>> tier =
        OpenOnce(dir, options, /*best_efforts=*/true, nullptr);
    absl::Status step = tier.status();
    if (tier.ok()) step = ReadMeta(**tier, report);
    if (step.ok()) {
      absl::StatusOr<std::vector<std::string>> orphans = (*tier)->DropPagesWithoutMeta();
      step = orphans.status();
      if (orphans.ok()) {
        // Best-efforts recovery does not replay the WAL. A page counts
        // once, whether its record lost its metadata, or lived only in the
        // WAL, or both (a record flushed, its metadata not).
        absl::flat_hash_set<std::string> lost = Missing(wal_keys, report->pages);
        const uint64_t wal_only = lost.size();
        lost.insert(orphans->begin(), orphans->end());
        report->lost_pages = lost.size();
        KVTIER_LOG(ERROR) << "data directory " << dir << " recovered in part: "
                          << report->quarantined_files << " files set aside in "
                          << report->quarantine_dir << "; " << orphans->size()
                          << " pages without metadata dropped, " << wal_only
                          << " pages that were only in the WAL lost, " << report->lost_pages
                          << " lost in all";
        return tier;
      }
    }
    if (!IsDamage(step)) return step;
    KVTIER_LOG(ERROR) << "data directory " << dir << ": recovery failed too (" << step
                      << "); starting empty";
  }

  // 3. Start empty.
  report->pages.clear();
  report->malformed_records = 0;
  report->pins.clear();
  report->malformed_pin_records = 0;
  RETURN_IF_ERROR(RemoveDatabaseFiles(dir));
  ASSIGN_OR_RETURN(std::unique_ptr<RocksTier> tier,
                   OpenOnce(dir, options, /*best_efforts=*/false, nullptr));
  report->started_empty = true;
  absl::flat_hash_set<std::string> lost = TableMetaKeys(report->quarantine_dir);
  lost.insert(wal_keys.begin(), wal_keys.end());
  report->lost_pages = lost.size();
  KVTIER_LOG(ERROR) << "data directory " << dir << " started empty; its files are in "
                    << report->quarantine_dir << "; about " << report->lost_pages
                    << " pages lost (metadata still readable in its tables and WAL)";
  return tier;
}

}  // namespace kvtier::store
