#include "worker/budget/profile.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iterator>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name + "." + std::to_string(getpid());
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteText(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

XkvProfile SampleXkv() {
  XkvProfile p;
  p.n_layers = 2;
  p.window = 8;
  p.kernel = 7;
  p.samples = {{{1.0 / 3, 0.1 + 0.2, 1e-300}, {7, 7}}, {{5}, {3, 2.5, 2.5, 0}}};
  return p;
}

LukvProfile SampleLukv() {
  LukvProfile p;
  p.n_layers = 1;
  p.n_kv_heads = 2;
  p.samples = {
      {{.length = 5, .protected_tokens = 2, .loss = {0, 0.5, 1.0 / 7, 2}},
       {.length = 3, .protected_tokens = 0, .loss = {0, 1, 1, 4}}}};
  p.samples[0][0].loss[2] = 0.75;
  return p;
}

LukvTable SampleTable() {
  LukvTable t;
  t.n_layers = 1;
  t.n_kv_heads = 2;
  for (int p = 1; p <= kLukvLevels; ++p) {
    t.prune.push_back({p / 100.0, (p / 2) / 100.0});
  }
  return t;
}

TEST(XkvProfileFileTest, RoundTripsExactly) {
  const std::string path = TempPath("xkv");
  ASSERT_TRUE(WriteXkvProfile(path, SampleXkv()).ok());
  auto read = ReadXkvProfile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->n_layers, 2u);
  EXPECT_EQ(read->window, 8u);
  EXPECT_EQ(read->kernel, 7u);
  EXPECT_EQ(read->samples, SampleXkv().samples);
  std::remove(path.c_str());
}

TEST(XkvProfileFileTest, TruncatedIsDataLossMalformedIsInvalid) {
  const std::string path = TempPath("xkvbad");
  ASSERT_TRUE(WriteXkvProfile(path, SampleXkv()).ok());
  const std::string text = ReadText(path);
  WriteText(path, text.substr(0, text.size() - 5));
  EXPECT_EQ(ReadXkvProfile(path).status().code(), absl::StatusCode::kDataLoss);
  WriteText(path, "kvtier-lukv-profile 1\n");
  EXPECT_EQ(ReadXkvProfile(path).status().code(),
            absl::StatusCode::kInvalidArgument);
  WriteText(path,
            "kvtier-xkv-profile 1\nlayers 1 samples 1 window 8 kernel 7\n"
            "curve 0 0 2\n1 2\nend\n");  // rises: not concave
  EXPECT_EQ(ReadXkvProfile(path).status().code(),
            absl::StatusCode::kInvalidArgument);
  WriteText(path,
            "kvtier-xkv-profile 1\nlayers 1 samples 1 window 8 kernel 7\n"
            "curve 0 0 2\n2 nan\nend\n");
  EXPECT_EQ(ReadXkvProfile(path).status().code(),
            absl::StatusCode::kInvalidArgument);
  WriteText(path,
            "kvtier-xkv-profile 1\nlayers 2 samples 1 window 8 kernel 7\n"
            "curve 0 0 1\n2\ncurve 0 0 1\n2\nend\n");  // repeated
  EXPECT_EQ(ReadXkvProfile(path).status().code(),
            absl::StatusCode::kInvalidArgument);
  WriteText(path,
            "kvtier-xkv-profile 1\nlayers 1 samples 1 window 8 kernel 7\n"
            "curve 0 0 4000000000\n2\nend\n");  // absurd count
  EXPECT_EQ(ReadXkvProfile(path).status().code(), absl::StatusCode::kDataLoss);
  WriteText(path,
            "kvtier-xkv-profile 1\nlayers 1 samples 1 window 8 kernel 7\n"
            "curve 0 0 1\n2\nend\nextra\n");
  EXPECT_EQ(ReadXkvProfile(path).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::remove(path.c_str());
  EXPECT_EQ(ReadXkvProfile(path).status().code(), absl::StatusCode::kNotFound);
}

TEST(XkvProfileFileTest, InvalidProfileIsNotWritten) {
  const std::string path = TempPath("xkvnot");
  XkvProfile p = SampleXkv();
  p.samples[1][1][1] = 9;  // rises
  EXPECT_EQ(WriteXkvProfile(path, p).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_NE(access(path.c_str(), F_OK), 0);
}

TEST(LukvProfileFileTest, RoundTripsExactly) {
  const std::string path = TempPath("lukv");
  ASSERT_TRUE(WriteLukvProfile(path, SampleLukv()).ok());
  auto read = ReadLukvProfile(path);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->samples.size(), 1u);
  for (int u = 0; u < 2; ++u) {
    EXPECT_EQ(read->samples[0][u].length, SampleLukv().samples[0][u].length);
    EXPECT_EQ(read->samples[0][u].protected_tokens,
              SampleLukv().samples[0][u].protected_tokens);
    EXPECT_EQ(read->samples[0][u].loss, SampleLukv().samples[0][u].loss);
  }
  std::remove(path.c_str());
}

TEST(LukvProfileFileTest, RejectsInconsistentCurves) {
  LukvProfile p = SampleLukv();
  p.samples[0][1].length = 4;  // loss needs 5 points now
  EXPECT_EQ(ValidateLukvProfile(p).code(), absl::StatusCode::kInvalidArgument);
  p = SampleLukv();
  p.samples[0][0].loss[0] = 0.5;
  EXPECT_EQ(ValidateLukvProfile(p).code(), absl::StatusCode::kInvalidArgument);
  p = SampleLukv();
  p.samples[0][1].loss[2] = 0.5;  // decreasing
  EXPECT_EQ(ValidateLukvProfile(p).code(), absl::StatusCode::kInvalidArgument);
  p = SampleLukv();
  p.samples[0].pop_back();
  EXPECT_EQ(ValidateLukvProfile(p).code(), absl::StatusCode::kInvalidArgument);
  const std::string path = TempPath("lukvbad");
  WriteText(path,
            "kvtier-lukv-profile 1\nlayers 1 kv_heads 1 samples 1\n"
            "curve 0 0 3 2 0 0 3\n0 1 2\nend\n");  // head 3 of 1
  EXPECT_EQ(ReadLukvProfile(path).status().code(),
            absl::StatusCode::kInvalidArgument);
  WriteText(path,
            "kvtier-lukv-profile 1\nlayers 1 kv_heads 1 samples 1\n"
            "curve 0 0 0 2 0 3\n0 1");
  EXPECT_EQ(ReadLukvProfile(path).status().code(), absl::StatusCode::kDataLoss);
  std::remove(path.c_str());
}

// A header that announces more curves than the file can hold fails before
// the reader sets aside room for them (a damaged count once made it build
// eleven million empty samples).
TEST(ProfileFileTest, AnnouncedCurvesMustFitInTheFile) {
  const std::string path = TempPath("announced");
  WriteText(path,
            "kvtier-lukv-profile 1\nlayers 1 kv_heads 1 samples 11303462\n"
            "curve 0 0 0 2 0 3\n0 1 2\nend\n");
  auto lukv = ReadLukvProfile(path);
  EXPECT_EQ(lukv.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(lukv.status().message(), ::testing::HasSubstr("11303462"));
  WriteText(path,
            "kvtier-xkv-profile 1\nlayers 4 samples 4000000 window 8 "
            "kernel 7\ncurve 0 0 1\n2\nend\n");
  EXPECT_EQ(ReadXkvProfile(path).status().code(), absl::StatusCode::kDataLoss);
  std::remove(path.c_str());
}

TEST(LukvTableFileTest, RoundTripsAndValidates) {
  const std::string path = TempPath("table");
  ASSERT_TRUE(WriteLukvTable(path, SampleTable()).ok());
  auto read = ReadLukvTable(path);
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_EQ(read->prune, SampleTable().prune);
  const std::string text = ReadText(path);
  // Level rows must come in order 1..99.
  std::string swapped = text;
  swapped.replace(swapped.find("level 2 "), 8, "level 3 ");
  WriteText(path, swapped);
  EXPECT_EQ(ReadLukvTable(path).status().code(),
            absl::StatusCode::kInvalidArgument);
  WriteText(path, text.substr(0, text.size() / 2));
  EXPECT_EQ(ReadLukvTable(path).status().code(), absl::StatusCode::kDataLoss);
  LukvTable bad = SampleTable();
  bad.prune[10][1] = -0.1;
  EXPECT_EQ(WriteLukvTable(path, bad).code(),
            absl::StatusCode::kInvalidArgument);
  bad = SampleTable();
  bad.prune.pop_back();
  EXPECT_EQ(ValidateLukvTable(bad).code(), absl::StatusCode::kInvalidArgument);
  std::remove(path.c_str());
}

TEST(AppendSamplesTest, ConcatenatesMatchingProfilesOnly) {
  XkvProfile a = SampleXkv();
  ASSERT_TRUE(AppendSamples(&a, SampleXkv()).ok());
  EXPECT_EQ(a.samples.size(), 4u);
  XkvProfile other = SampleXkv();
  other.window = 16;
  EXPECT_EQ(AppendSamples(&a, other).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.samples.size(), 4u);
  LukvProfile l = SampleLukv();
  ASSERT_TRUE(AppendSamples(&l, SampleLukv()).ok());
  EXPECT_EQ(l.samples.size(), 2u);
  LukvProfile wide = SampleLukv();
  wide.n_kv_heads = 1;
  wide.samples[0].pop_back();
  EXPECT_EQ(AppendSamples(&l, wide).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(l.samples.size(), 2u);
}

}  // namespace
}  // namespace kvtier
