#include "kvstore/core/rocks_tier.h"

#include <gtest/gtest.h>

#include "rocksdb/status.h"
#include "testing/store_test_util.h"

namespace kvtier::store {
namespace {

using testing::Key;
using testing::PageBytes;
using testing::SmallLayout;
using testing::TempDir;

TEST(RocksTierTest, PutGetDeleteAndIterateMeta) {
  TempDir dir;
  auto tier = RocksTier::Open(dir.path());
  ASSERT_TRUE(tier.ok()) << tier.status();
  const std::vector<uint8_t> a = PageBytes(Key(1), SmallLayout());
  const std::vector<uint8_t> b = PageBytes(Key(2), SmallLayout());
  PageMeta meta{.layout = SmallLayout(), .bytes = a.size(), .checksum = 7};
  ASSERT_TRUE((*tier)->Put({{.key = Key(1), .meta = meta, .bytes = a},
                            {.key = Key(2), .meta = meta, .bytes = b}})
                  .ok());
  auto got = (*tier)->Get(Key(1));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, testing::AsString(a));
  auto got_meta = (*tier)->GetMeta(Key(2));
  ASSERT_TRUE(got_meta.ok());
  EXPECT_EQ(got_meta->layout, SmallLayout());
  EXPECT_EQ(got_meta->bytes, 4096u);
  EXPECT_EQ(got_meta->checksum, 7u);
  EXPECT_EQ((*tier)->Get(Key(3)).status().code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE((*tier)->Delete({Key(1), Key(9)}).ok());
  EXPECT_EQ((*tier)->Get(Key(1)).status().code(), absl::StatusCode::kNotFound);
  std::vector<PageKey> seen;
  uint64_t malformed = 99;
  ASSERT_TRUE((*tier)->ForEachMeta([&](const PageKey& k, const PageMeta&) { seen.push_back(k); },
                                   &malformed)
                  .ok());
  EXPECT_EQ(seen, std::vector<PageKey>{Key(2)});
  EXPECT_EQ(malformed, 0u);
}

TEST(RocksTierTest, PagesSurviveReopen) {
  TempDir dir;
  const std::vector<uint8_t> a = PageBytes(Key(5, 3), SmallLayout());
  {
    auto tier = *RocksTier::Open(dir.path());
    PageMeta meta{.layout = SmallLayout(), .bytes = a.size(), .checksum = 1};
    ASSERT_TRUE(tier->Put({{.key = Key(5, 3), .meta = meta, .bytes = a}}).ok());
  }
  auto tier = *RocksTier::Open(dir.path());
  auto got = tier->Get(Key(5, 3));
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, testing::AsString(a));
}

TEST(RocksTierTest, MetaEncodingRoundTripsAndRejectsGarbage) {
  PageMeta meta{.layout = SmallLayout(), .bytes = 4096, .checksum = 0x0123456789abcdefull};
  const std::string encoded = RocksTier::EncodeMeta(meta);
  ASSERT_EQ(encoded.size(), RocksTier::kMetaValueBytes);
  auto decoded = RocksTier::DecodeMeta(encoded);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->checksum, meta.checksum);
  EXPECT_EQ(RocksTier::DecodeMeta(encoded.substr(1)).status().code(),
            absl::StatusCode::kDataLoss);
  std::string bad_version = encoded;
  bad_version[0] = 2;
  EXPECT_EQ(RocksTier::DecodeMeta(bad_version).status().code(), absl::StatusCode::kDataLoss);
  PageMeta wrong_bytes = meta;
  wrong_bytes.bytes = 4095;
  EXPECT_EQ(RocksTier::DecodeMeta(RocksTier::EncodeMeta(wrong_bytes)).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(RocksTierTest, StatusConversion) {
  EXPECT_TRUE(FromRocksStatus(rocksdb::Status::OK()).ok());
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::NotFound()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::Corruption("x")).code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::NoSpace("x")).code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::IOError("x")).code(), absl::StatusCode::kInternal);
  EXPECT_EQ(FromRocksStatus(rocksdb::Status::Busy()).code(), absl::StatusCode::kUnavailable);
}

TEST(RocksTierTest, OpenFailsOnAFile) {
  TempDir dir;
  const std::string file = dir.path() + "/not-a-dir";
  FILE* f = fopen(file.c_str(), "w");
  ASSERT_NE(f, nullptr);
  fclose(f);
  EXPECT_FALSE(RocksTier::Open(file).ok());
}

}  // namespace
}  // namespace kvtier::store
