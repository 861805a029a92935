// RawRocks: a store's data directory opened with RocksDB directly, every
// column family of RocksTier, so that a test can damage or forge records
// the store would never write.
#ifndef KVTIER_TESTING_RAW_ROCKS_H_
#define KVTIER_TESTING_RAW_ROCKS_H_

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "kvstore/core/rocks_tier.h"
#include "rocksdb/db.h"

namespace kvtier::store::testing {

class RawRocks {
 public:
  // Check ok() (an ASSERT inside a constructor cannot stop the test).
  explicit RawRocks(const std::string& dir) {
    rocksdb::DBOptions db_options;
    db_options.create_missing_column_families = true;
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name : RocksTier::kFamilies) {
      families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DB* raw = nullptr;
    status_ = rocksdb::DB::Open(db_options, dir, families, &handles_, &raw);
    db_.reset(raw);
  }
  ~RawRocks() {
    for (auto* h : handles_) EXPECT_TRUE(db_->DestroyColumnFamilyHandle(h).ok());
    if (db_ != nullptr) {
      EXPECT_TRUE(db_->Close().ok());
    }
  }
  RawRocks(const RawRocks&) = delete;
  RawRocks& operator=(const RawRocks&) = delete;

  bool ok() const { return status_.ok(); }
  std::string status() const { return status_.ToString(); }
  rocksdb::DB& db() { return *db_; }
  // index: RocksTier::kPagesIndex, kMetaIndex or kPinsIndex.
  rocksdb::ColumnFamilyHandle* family(size_t index) { return handles_[index]; }

 private:
  rocksdb::Status status_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
  std::unique_ptr<rocksdb::DB> db_;
};

}  // namespace kvtier::store::testing

#endif  // KVTIER_TESTING_RAW_ROCKS_H_
