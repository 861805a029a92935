// Persistence of the real kvtier-server: pages on the disk tier survive a
// restart with valid checksums, pinned pages and their pins survive kill -9,
// and a page corrupted on disk (through the RocksDB API, while the server
// is stopped) is reported LOST and counted, never returned. The RAM tier
// is a few pages large so that pages are demoted to disk; the disk format
// is the one documented in kvstore/core/rocks_tier.h.
#include <signal.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/store_client.h"
#include "common/checksum.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "rocksdb/db.h"
#include "testing/server_process.h"
#include "testing/test_pages.h"

namespace kvtier::testing {
namespace {

using ::testing::HasSubstr;

constexpr char kPagesFamily[] = "pages";
constexpr char kMetaFamily[] = "meta";
constexpr char kPinsFamily[] = "pins";

// Opens the stopped server's database with its column families.
struct RocksHandle {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> families;  // default, pages, meta, pins

  explicit RocksHandle(const std::string& dir) {
    std::vector<rocksdb::ColumnFamilyDescriptor> descriptors = {
        {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
        {kPagesFamily, rocksdb::ColumnFamilyOptions()},
        {kMetaFamily, rocksdb::ColumnFamilyOptions()},
        {kPinsFamily, rocksdb::ColumnFamilyOptions()}};
    rocksdb::DB* raw = nullptr;
    rocksdb::Status s = rocksdb::DB::Open(rocksdb::DBOptions(), dir, descriptors, &families, &raw);
    EXPECT_TRUE(s.ok()) << s.ToString();
    db.reset(raw);
  }
  ~RocksHandle() {
    if (db == nullptr) return;
    for (rocksdb::ColumnFamilyHandle* h : families) {
      EXPECT_TRUE(db->DestroyColumnFamilyHandle(h).ok());
    }
  }

  std::set<PageKey> MetaKeys() {
    std::set<PageKey> keys;
    std::unique_ptr<rocksdb::Iterator> it(db->NewIterator(rocksdb::ReadOptions(), families[2]));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      absl::StatusOr<PageKey> key = PageKey::Decode(it->key().ToStringView());
      EXPECT_TRUE(key.ok()) << key.status();
      if (key.ok()) keys.insert(*key);
    }
    EXPECT_TRUE(it->status().ok());
    return keys;
  }

  // Flips one page byte of `key`'s stored value (after the version byte).
  void CorruptPage(const PageKey& key) {
    std::string value;
    ASSERT_TRUE(db->Get(rocksdb::ReadOptions(), families[1], key.Encode(), &value).ok());
    ASSERT_GT(value.size(), 101u);
    value[101] = static_cast<char>(value[101] ^ 0x5a);
    rocksdb::WriteOptions sync;
    sync.sync = true;
    ASSERT_TRUE(db->Put(sync, families[1], key.Encode(), value).ok());
  }
};

class ServerRestartTest : public ::testing::Test {
 protected:
  std::string DataDir() const { return dir_.path() + "/data"; }

  void StartServer(std::vector<std::string> args = {}) {
    // 64 KiB of RAM: eight 8 KiB pages at most.
    args.push_back("--data_dir=" + DataDir());
    args.push_back("--ram_bytes=65536");
    absl::StatusOr<std::unique_ptr<ServerProcess>> server = ServerProcess::Start(args, dir_.path());
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = std::move(server).value();
    client::ClientOptions options;
    options.max_batch_pages = 4;
    auto client = client::StoreClient::Connect(server_->target(), options);
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(client).value();
  }

  void StopServer() {
    client_.reset();
    absl::StatusOr<ExitResult> exit = server_->Stop();
    ASSERT_TRUE(exit.ok()) << exit.status();
    ASSERT_EQ(exit->exit_code, 0) << exit->stderr_text;
    server_.reset();
  }

  // Stores 16 pages x 2 layers, most of which end up on disk only.
  void PutPages() {
    chain_ = PromptChain(layout_, 16, 9);
    pages_ = MakePages(layout_, chain_, 2);
    absl::StatusOr<std::vector<client::PutOutcome>> put = client_->BatchPut(pages_.ToPut(layout_));
    ASSERT_TRUE(put.ok()) << put.status();
    absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
    ASSERT_TRUE(stats.ok());
    ASSERT_EQ(stats->put_pages(), 32u);
    ASSERT_GT(stats->demotions(), 0u);
    ASSERT_GT(stats->disk().pages(), 0u);
  }

  const std::string& BytesOf(const PageKey& key) const {
    auto it = std::find(pages_.keys.begin(), pages_.keys.end(), key);
    return pages_.bytes[it - pages_.keys.begin()];
  }

  TempDir dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<client::StoreClient> client_;
  PageLayout layout_ = SmallLayout();
  std::vector<Hash128> chain_;
  PageSet pages_;
};

TEST_F(ServerRestartTest, DiskPagesComeBackAfterRestart) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(PutPages());
  absl::StatusOr<client::LookupReply> lookup = client_->Lookup(chain_, 0, 2);
  ASSERT_TRUE(lookup.ok());
  EXPECT_EQ(lookup->prefix_pages, 16u);
  std::set<PageKey> disk_only;
  for (size_t i = 0; i < pages_.keys.size(); ++i) {
    if (lookup->tiers[i] == v1::TIER_DISK) disk_only.insert(pages_.keys[i]);
  }
  ASSERT_FALSE(disk_only.empty());
  ASSERT_NO_FATAL_FAILURE(StopServer());

  std::set<PageKey> on_disk;
  {
    RocksHandle rocks(DataDir());
    on_disk = rocks.MetaKeys();
  }
  EXPECT_TRUE(std::includes(on_disk.begin(), on_disk.end(), disk_only.begin(), disk_only.end()));

  ASSERT_NO_FATAL_FAILURE(StartServer());
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->disk().pages(), on_disk.size());
  EXPECT_EQ(stats->lost_pages(), 0u);
  const std::vector<PageKey> keys(on_disk.begin(), on_disk.end());
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(keys);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    const client::GotPage& g = (*got)[i];
    ASSERT_EQ(g.status, v1::PAGE_STATUS_OK) << keys[i].DebugString();
    EXPECT_EQ(g.data, BytesOf(keys[i]));
    EXPECT_EQ(g.checksum, PageChecksum(g.data.data(), g.data.size()));
    EXPECT_EQ(g.layout, layout_);
  }
  StopServer();
}

// With shutdown_demote_ms, a graceful stop writes the pages held only in
// RAM to disk, so every page comes back after the restart; without it,
// those pages are gone.
TEST_F(ServerRestartTest, ShutdownDemotionKeepsRamPages) {
  for (const bool demote : {false, true}) {
    SCOPED_TRACE(demote ? "shutdown_demote_ms=60000" : "default");
    std::filesystem::remove_all(DataDir());
    std::vector<std::string> args;
    if (demote) args.push_back("--shutdown_demote_ms=60000");
    ASSERT_NO_FATAL_FAILURE(StartServer(args));
    ASSERT_NO_FATAL_FAILURE(PutPages());
    absl::StatusOr<v1::StatsResponse> before = client_->Stats();
    ASSERT_TRUE(before.ok());
    absl::StatusOr<client::LookupReply> lookup = client_->Lookup(chain_, 0, 2);
    ASSERT_TRUE(lookup.ok());
    uint64_t ram_only = 0;
    for (v1::Tier t : lookup->tiers) ram_only += t == v1::TIER_RAM ? 1 : 0;
    ASSERT_GT(ram_only, 0u);
    ASSERT_NO_FATAL_FAILURE(StopServer());
    ASSERT_NO_FATAL_FAILURE(StartServer());
    absl::StatusOr<v1::StatsResponse> after = client_->Stats();
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after->disk().pages(), demote ? 32u : 32u - ram_only);
    absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pages_.keys);
    ASSERT_TRUE(got.ok()) << got.status();
    uint64_t back = 0;
    for (size_t i = 0; i < pages_.keys.size(); ++i) {
      if ((*got)[i].status != v1::PAGE_STATUS_OK) continue;
      EXPECT_EQ((*got)[i].data, pages_.bytes[i]);
      ++back;
    }
    EXPECT_EQ(back, demote ? 32u : 32u - ram_only);
    ASSERT_NO_FATAL_FAILURE(StopServer());
  }
}

// A pin's reply means its pages and the pin are on disk: pinned pages that
// were only in RAM survive kill -9 and are still pinned after it (the same
// id unpins them); unpinned RAM-only pages do not survive (the store is a
// cache).
TEST_F(ServerRestartTest, PinnedPagesSurviveKill9) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(PutPages());
  absl::StatusOr<client::LookupReply> lookup = client_->Lookup(chain_, 0, 2);
  ASSERT_TRUE(lookup.ok());
  std::vector<PageKey> ram_only;
  for (size_t i = 0; i < pages_.keys.size(); ++i) {
    if (lookup->tiers[i] == v1::TIER_RAM) ram_only.push_back(pages_.keys[i]);
  }
  ASSERT_GE(ram_only.size(), 2u);
  const std::vector<PageKey> pinned(ram_only.begin(), ram_only.begin() + ram_only.size() / 2);
  const std::vector<PageKey> unpinned(ram_only.begin() + ram_only.size() / 2, ram_only.end());
  absl::StatusOr<std::string> pin_id = client_->Pin(pinned, 600'000);
  ASSERT_TRUE(pin_id.ok()) << pin_id.status();

  client_.reset();
  absl::StatusOr<ExitResult> killed = server_->Stop(absl::Seconds(60), SIGKILL);
  ASSERT_TRUE(killed.ok()) << killed.status();
  EXPECT_EQ(killed->exit_code, -1);
  server_.reset();

  ASSERT_NO_FATAL_FAILURE(StartServer());
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->active_pins(), 1u);
  EXPECT_EQ(stats->disk().pinned_pages(), pinned.size());
  EXPECT_EQ(stats->lost_pages(), 0u);
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(pinned);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < pinned.size(); ++i) {
    ASSERT_EQ((*got)[i].status, v1::PAGE_STATUS_OK) << pinned[i].DebugString();
    EXPECT_EQ((*got)[i].data, BytesOf(pinned[i]));
  }
  got = client_->BatchGet(unpinned);
  ASSERT_TRUE(got.ok()) << got.status();
  for (size_t i = 0; i < unpinned.size(); ++i) {
    EXPECT_EQ((*got)[i].status, v1::PAGE_STATUS_NOT_FOUND) << unpinned[i].DebugString();
  }
  ASSERT_TRUE(client_->Unpin(*pin_id).ok());
  stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->active_pins(), 0u);
  StopServer();
}

// verify_on_open=false leaves the corruption to the first read.
TEST_F(ServerRestartTest, CorruptDiskPageIsLostOnReadAndCounted) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(PutPages());
  ASSERT_NO_FATAL_FAILURE(StopServer());
  PageKey victim;
  std::set<PageKey> on_disk;
  {
    RocksHandle rocks(DataDir());
    on_disk = rocks.MetaKeys();
    ASSERT_GE(on_disk.size(), 2u);
    victim = *on_disk.begin();
    ASSERT_NO_FATAL_FAILURE(rocks.CorruptPage(victim));
  }
  ASSERT_NO_FATAL_FAILURE(StartServer({"--verify_on_open=false"}));
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->lost_pages(), 0u);
  EXPECT_EQ(stats->disk().pages(), on_disk.size());

  const PageKey other = *std::next(on_disk.begin());
  const std::vector<PageKey> keys = {victim, other};
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(keys);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ((*got)[0].status, v1::PAGE_STATUS_LOST);
  EXPECT_EQ((*got)[0].data, "");
  EXPECT_EQ((*got)[1].status, v1::PAGE_STATUS_OK);
  EXPECT_EQ((*got)[1].data, BytesOf(other));
  stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->lost_pages(), 1u);
  EXPECT_EQ(stats->disk().pages(), on_disk.size() - 1);
  // Dropped: the next read finds nothing.
  got = client_->BatchGet({&victim, 1});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0].status, v1::PAGE_STATUS_NOT_FOUND);
  StopServer();
}

// verify_on_open checks every disk page in the background while the server
// serves; Stats' unverified_disk_pages counts down to 0.
TEST_F(ServerRestartTest, CorruptDiskPageIsDroppedByTheBackgroundCheck) {
  ASSERT_NO_FATAL_FAILURE(StartServer());
  ASSERT_NO_FATAL_FAILURE(PutPages());
  ASSERT_NO_FATAL_FAILURE(StopServer());
  PageKey victim;
  size_t disk_pages = 0;
  {
    RocksHandle rocks(DataDir());
    std::set<PageKey> on_disk = rocks.MetaKeys();
    ASSERT_FALSE(on_disk.empty());
    disk_pages = on_disk.size();
    victim = *on_disk.rbegin();
    ASSERT_NO_FATAL_FAILURE(rocks.CorruptPage(victim));
  }
  ASSERT_NO_FATAL_FAILURE(StartServer({"--verify_on_open=true"}));
  absl::StatusOr<v1::StatsResponse> stats = client_->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_LE(stats->unverified_disk_pages(), disk_pages);
  const absl::Time deadline = absl::Now() + absl::Seconds(60);  // a hang, not a speed
  while (stats.ok() && stats->unverified_disk_pages() > 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(5));
    stats = client_->Stats();
  }
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->unverified_disk_pages(), 0u);
  EXPECT_EQ(stats->lost_pages(), 1u);
  EXPECT_EQ(stats->disk().pages(), disk_pages - 1);
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet({&victim, 1});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ((*got)[0].status, v1::PAGE_STATUS_NOT_FOUND);
  client_.reset();
  absl::StatusOr<ExitResult> exit = server_->Stop();
  ASSERT_TRUE(exit.ok());
  EXPECT_THAT(exit->stderr_text,
              HasSubstr("verified " + std::to_string(disk_pages) + " disk pages in"));
  EXPECT_THAT(exit->stderr_text, HasSubstr(", lost 1"));
}

}  // namespace
}  // namespace kvtier::testing
