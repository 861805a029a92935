// RocksTier::Open: opening a data directory, damaged or not.
//
// The ladder, each step taken only when the one before failed with damage
// (RocksDB's Corruption; other errors, such as a lock another process
// holds, are returned unchanged and nothing is touched):
//   1. Open as it is. WAL records that fail their checksums are skipped
//      (kSkipAnyCorruptedRecords) and counted from the sequence gaps they
//      leave; then the metadata family is read in full (into the report,
//      from which the store builds its index).
//   2. Set aside: every file is hard-linked into dir/quarantine/<time>/
//      (no copy; the damaged bytes stay there for an operator), a table
//      named in the error is removed from the directory, and RocksDB's
//      best-efforts recovery opens the newest state whose files are all
//      present. That recovery drops the WAL. Page records whose metadata
//      did not survive are deleted and counted lost.
//   3. Start empty: the directory's files (all linked in quarantine) are
//      removed and a new database is created; the metadata records still
//      readable in the quarantined tables are counted lost.
// Every page that does come back is still verified against its checksum
// by the store (in the background and on every read), so damage that
// RocksDB did not notice is never served either.
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kvstore/core/rocks_tier.h"
#include "rocksdb/db.h"
#include "rocksdb/options.h"
#include "rocksdb/sst_file_reader.h"
#include "rocksdb/table_properties.h"

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

// Hard-links every regular file of `dir` (but LOCK) into a new folder
// dir/quarantine/<UTC time>-<pid>/; returns the folder and the count.
absl::StatusOr<std::pair<std::string, uint64_t>> LinkIntoQuarantine(const std::string& dir) {
  const std::string folder = absl::StrCat(
      dir, "/quarantine/", absl::FormatTime("%Y%m%dT%H%M%SZ", absl::Now(), absl::UTCTimeZone()),
      "-", getpid());
  std::error_code error;
  fs::create_directories(folder, error);
  if (error) {
    return absl::InternalError(absl::StrCat("cannot create ", folder, ": ", error.message()));
  }
  uint64_t linked = 0;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir, error)) {
    if (!entry.is_regular_file() || entry.path().filename() == "LOCK") continue;
    fs::create_hard_link(entry.path(), fs::path(folder) / entry.path().filename(), error);
    if (error) {
      return absl::InternalError(absl::StrCat("cannot link ", entry.path().string(), " into ",
                                              folder, ": ", error.message()));
    }
    ++linked;
  }
  if (error) return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", error.message()));
  return std::make_pair(folder, linked);
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

// Metadata records still readable in the tables of `folder`: what a
// directory that starts empty lost, as far as it can be known. A record
// that several tables hold (before compaction merged them) counts more
// than once, so this errs high.
uint64_t CountMetaRecords(const std::string& folder) {
  uint64_t records = 0;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, error)) {
    if (entry.path().extension() != ".sst") continue;
    rocksdb::SstFileReader reader{rocksdb::Options()};
    if (!reader.Open(entry.path().string()).ok()) continue;
    std::shared_ptr<const rocksdb::TableProperties> properties = reader.GetTableProperties();
    if (properties == nullptr || properties->column_family_name != RocksTier::kMetaFamily) continue;
    std::unique_ptr<rocksdb::Iterator> it(reader.NewIterator(rocksdb::ReadOptions()));
    for (it->SeekToFirst(); it->Valid(); it->Next()) ++records;
  }
  return records;
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
  // Each page record and its metadata are one batch of two entries.
  constexpr uint64_t kEntriesPerPage = 2;

  // 1. As it is.
  uint64_t skipped_entries = 0;
  absl::Status damage;
  {
    absl::StatusOr<std::unique_ptr<RocksTier>> tier =
        OpenOnce(dir, options, /*best_efforts=*/false, &skipped_entries);
    if (tier.ok()) damage = ReadMeta(**tier, report);
    if (tier.ok() && damage.ok()) {
      if (skipped_entries > 0) {
        report->damage = absl::StrCat("WAL records that failed their checksums: ",
                                      skipped_entries, " entries skipped");
        report->lost_pages = (skipped_entries + kEntriesPerPage - 1) / kEntriesPerPage;
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
      absl::StatusOr<uint64_t> orphans = (*tier)->DropPagesWithoutMeta();
      step = orphans.status();
      if (orphans.ok()) {
        report->lost_pages = *orphans;
        KVTIER_LOG(ERROR) << "data directory " << dir << " recovered in part: "
                          << report->quarantined_files << " files set aside in "
                          << report->quarantine_dir << ", " << report->lost_pages
                          << " pages without metadata dropped (pages only in the WAL are "
                          << "gone uncounted)";
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
  report->lost_pages = CountMetaRecords(report->quarantine_dir);
  KVTIER_LOG(ERROR) << "data directory " << dir << " started empty; its files are in "
                    << report->quarantine_dir << "; about " << report->lost_pages
                    << " pages lost (metadata records still readable there)";
  return tier;
}

}  // namespace kvtier::store
