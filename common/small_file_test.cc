// ReadSmallFile against what a mistaken or hostile path names: a regular
// file is read whole; a FIFO (with no writer), a directory and a device are
// refused at once; a file over the bound and an absent one are errors.
#include "common/small_file.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

class SmallFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/kvtier_small_file_test_XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    for (const char* name : {"/file", "/big", "/fifo"}) unlink((dir_ + name).c_str());
    rmdir(dir_.c_str());
  }
  std::string dir_;
};

TEST_F(SmallFileTest, ReadsARegularFileWhole) {
  std::ofstream(dir_ + "/file") << "line one\nline two";
  absl::StatusOr<std::string> text = ReadSmallFile(dir_ + "/file", 64, "test file");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text, "line one\nline two");
  // Exactly at the bound still fits.
  text = ReadSmallFile(dir_ + "/file", 17, "test file");
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(text->size(), 17u);
}

TEST_F(SmallFileTest, OverTheBoundIsInvalidArgument) {
  std::ofstream(dir_ + "/big") << std::string(2048 + 1, 'x');
  const absl::Status s = ReadSmallFile(dir_ + "/big", 2048, "test file").status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), absl::StrCat("test file ", dir_, "/big is larger than 2 KiB"));
}

TEST_F(SmallFileTest, OnlyRegularFilesAreRead) {
  ASSERT_EQ(mkfifo((dir_ + "/fifo").c_str(), 0600), 0);
  for (const std::string& path : {dir_ + "/fifo", dir_, std::string("/dev/zero")}) {
    const absl::Status s = ReadSmallFile(path, 1 << 20, "test file").status();
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << path;
    EXPECT_EQ(s.message(), absl::StrCat("test file ", path, " is not a regular file"));
  }
  EXPECT_EQ(ReadSmallFile(dir_ + "/absent", 1 << 20, "test file").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace kvtier
