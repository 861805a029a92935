#include "worker/trace/trace.h"

#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <string>

#include "common/checksum.h"
#include "common/endian.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return ::testing::TempDir() + "/" + name + "." + std::to_string(getpid());
}

TraceHeader SmallHeader(TraceDtype dtype = TraceDtype::kF32) {
  TraceHeader h;
  h.n_layers = 2;
  h.n_q_heads = 4;
  h.n_kv_heads = 2;
  h.head_dim = 3;
  h.dtype = dtype;
  h.prompt_len = 5;
  h.n_prompt_queries = 2;
  h.decode_steps = 3;
  return h;
}

// Values exactly representable in f16, distinct per (tag, index).
std::vector<float> Fill(uint64_t n, int tag) {
  std::vector<float> v(n);
  for (uint64_t i = 0; i < n; ++i) {
    v[i] = static_cast<float>(tag) * 0.25f - static_cast<float>(i) * 0.5f;
  }
  return v;
}

TracePromptLayer PromptFor(const TraceHeader& h, uint32_t layer) {
  const uint64_t d = h.head_dim;
  TracePromptLayer rec;
  rec.queries = Fill(uint64_t{h.n_prompt_queries} * h.n_q_heads * d, layer + 1);
  rec.keys = Fill(uint64_t{h.prompt_len} * h.n_kv_heads * d, layer + 11);
  rec.values = Fill(uint64_t{h.prompt_len} * h.n_kv_heads * d, layer + 21);
  return rec;
}

TraceStep StepFor(const TraceHeader& h, uint32_t step, uint32_t layer) {
  const int tag = static_cast<int>(100 + 10 * step + layer);
  TraceStep rec;
  rec.query = Fill(uint64_t{h.n_q_heads} * h.head_dim, tag);
  rec.key = Fill(uint64_t{h.n_kv_heads} * h.head_dim, tag + 1);
  rec.value = Fill(uint64_t{h.n_kv_heads} * h.head_dim, tag + 2);
  return rec;
}

void WriteFull(const std::string& path, const TraceHeader& h) {
  auto writer = TraceWriter::Create(path, h);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (uint32_t l = 0; l < h.n_layers; ++l) {
    ASSERT_TRUE(writer->WritePromptLayer(l, PromptFor(h, l)).ok());
  }
  for (uint32_t s = 0; s < h.decode_steps; ++s) {
    for (uint32_t l = 0; l < h.n_layers; ++l) {
      ASSERT_TRUE(writer->WriteStep(s, l, StepFor(h, s, l)).ok());
    }
  }
  ASSERT_TRUE(writer->Finish().ok());
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

class TraceRoundTripTest : public ::testing::TestWithParam<TraceDtype> {};

TEST_P(TraceRoundTripTest, EveryRecordReadsBackExactly) {
  const TraceHeader h = SmallHeader(GetParam());
  const std::string path = TempPath("roundtrip");
  WriteFull(path, h);
  EXPECT_EQ(ReadBytes(path).size(), h.FileBytes());
  auto reader = TraceReader::Open(path);
  ASSERT_TRUE(reader.ok()) << reader.status();
  EXPECT_EQ(reader->header(), h);
  for (uint32_t l = 0; l < h.n_layers; ++l) {
    TracePromptLayer rec;
    ASSERT_TRUE(reader->ReadPromptLayer(l, &rec).ok());
    const TracePromptLayer want = PromptFor(h, l);
    EXPECT_EQ(rec.queries, want.queries);
    EXPECT_EQ(rec.keys, want.keys);
    EXPECT_EQ(rec.values, want.values);
  }
  // Random access in reverse order: offsets, not a cursor.
  for (int s = static_cast<int>(h.decode_steps) - 1; s >= 0; --s) {
    for (uint32_t l = 0; l < h.n_layers; ++l) {
      TraceStep rec;
      ASSERT_TRUE(reader->ReadStep(s, l, &rec).ok());
      const TraceStep want = StepFor(h, s, l);
      EXPECT_EQ(rec.query, want.query);
      EXPECT_EQ(rec.key, want.key);
      EXPECT_EQ(rec.value, want.value);
    }
  }
  std::remove(path.c_str());
}

INSTANTIATE_TEST_SUITE_P(Dtypes, TraceRoundTripTest,
                         ::testing::Values(TraceDtype::kF32, TraceDtype::kF16));

TEST(TraceHeaderTest, SizesFollowTheShape) {
  const TraceHeader h = SmallHeader();
  // (2*4 + 2*5*2) * 3 = 84 elements; (4 + 2*2) * 3 = 24 elements.
  EXPECT_EQ(h.PromptRecordElements(), 84u);
  EXPECT_EQ(h.StepRecordElements(), 24u);
  EXPECT_EQ(h.PromptRecordBytes(), 84u * 4 + 8);
  EXPECT_EQ(h.StepRecordBytes(), 24u * 4 + 8);
  EXPECT_EQ(h.FileBytes(), 64u + 2 * (84 * 4 + 8) + 6 * (24 * 4 + 8));
  EXPECT_EQ(h.StepRecordOffset(1, 1), 64u + 2 * 344 + 3 * 104);
}

TEST(TraceHeaderTest, RejectsInconsistentShapes) {
  TraceHeader h = SmallHeader();
  h.n_kv_heads = 3;
  EXPECT_EQ(ValidateTraceHeader(h).code(), absl::StatusCode::kInvalidArgument);
  h = SmallHeader();
  h.head_dim = 0;
  EXPECT_EQ(ValidateTraceHeader(h).code(), absl::StatusCode::kInvalidArgument);
  h = SmallHeader();
  h.n_prompt_queries = 6;
  EXPECT_EQ(ValidateTraceHeader(h).code(), absl::StatusCode::kInvalidArgument);
  h = SmallHeader();
  h.dtype = static_cast<TraceDtype>(7);
  EXPECT_EQ(ValidateTraceHeader(h).code(), absl::StatusCode::kInvalidArgument);
  h = SmallHeader();
  h.prompt_len = kTraceMaxDim + 1;
  EXPECT_EQ(ValidateTraceHeader(h).code(), absl::StatusCode::kInvalidArgument);
  const std::string path = TempPath("badheader");
  EXPECT_EQ(TraceWriter::Create(path, h).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0);
}

class TraceCorruptionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = TempPath("corrupt");
    WriteFull(path_, SmallHeader());
    bytes_ = ReadBytes(path_);
  }
  void TearDown() override { std::remove(path_.c_str()); }
  absl::StatusCode OpenCode(const std::string& bytes) {
    WriteBytes(path_, bytes);
    return TraceReader::Open(path_).status().code();
  }
  // Rewrites a header field and recomputes the header checksum, so only the
  // field itself is wrong.
  std::string WithField(size_t offset, uint32_t value) {
    std::string b = bytes_;
    auto* p = reinterpret_cast<uint8_t*>(b.data());
    StoreLe32(p + offset, value);
    StoreLe64(p + 56, PageChecksum(p, 56));
    return b;
  }
  std::string path_;
  std::string bytes_;
};

TEST_F(TraceCorruptionTest, BadMagicIsInvalidArgument) {
  std::string b = bytes_;
  b[0] = 'X';
  EXPECT_EQ(OpenCode(b), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenCode("hello world"), absl::StatusCode::kInvalidArgument);
}

TEST_F(TraceCorruptionTest, BadVersionIsInvalidArgument) {
  EXPECT_EQ(OpenCode(WithField(8, 2)), absl::StatusCode::kInvalidArgument);
}

TEST_F(TraceCorruptionTest, InconsistentShapeIsInvalidArgument) {
  EXPECT_EQ(OpenCode(WithField(24, 3)), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(OpenCode(WithField(32, 9)), absl::StatusCode::kInvalidArgument);
}

TEST_F(TraceCorruptionTest, HeaderChecksumMismatchIsDataLoss) {
  std::string b = bytes_;
  b[16] = 3;  // n_layers without fixing the checksum
  EXPECT_EQ(OpenCode(b), absl::StatusCode::kDataLoss);
}

TEST_F(TraceCorruptionTest, TruncatedOrPaddedFileIsDataLoss) {
  EXPECT_EQ(OpenCode(bytes_.substr(0, bytes_.size() - 1)),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(OpenCode(bytes_.substr(0, 40)), absl::StatusCode::kDataLoss);
  EXPECT_EQ(OpenCode(bytes_ + "x"), absl::StatusCode::kDataLoss);
  // A shape that claims more steps than the file holds.
  EXPECT_EQ(OpenCode(WithField(44, 4)), absl::StatusCode::kDataLoss);
}

TEST_F(TraceCorruptionTest, CorruptRecordIsDataLossAndLeavesOutputAlone) {
  const TraceHeader h = SmallHeader();
  std::string b = bytes_;
  b[h.StepRecordOffset(1, 0) + 5] ^= 0x40;
  WriteBytes(path_, b);
  auto reader = TraceReader::Open(path_);
  ASSERT_TRUE(reader.ok());
  TraceStep out;
  out.query = {42.0f};
  EXPECT_EQ(reader->ReadStep(1, 0, &out).code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(out.query, ElementsAre(42.0f));
  EXPECT_TRUE(out.key.empty());
  // Neighbouring records are unaffected.
  EXPECT_TRUE(reader->ReadStep(1, 1, &out).ok());
  EXPECT_EQ(out.query, StepFor(h, 1, 1).query);
}

// A record whose checksum holds but whose values are not finite (a writer
// that skipped CheckValues) is refused as the writer would have refused it.
TEST_F(TraceCorruptionTest, NonFiniteValuesAreInvalidArgumentAndLeaveOutputAlone) {
  const TraceHeader h = SmallHeader();
  const uint64_t payload = uint64_t{h.n_q_heads + 2 * h.n_kv_heads} * h.head_dim * 4;
  for (const float bad : {std::nanf(""), INFINITY}) {
    std::string b = bytes_;
    auto* record = reinterpret_cast<uint8_t*>(b.data()) + h.StepRecordOffset(1, 0);
    std::memcpy(record + 2 * 4, &bad, 4);  // the query's third value
    StoreLe64(record + payload, PageChecksum(record, payload));
    WriteBytes(path_, b);
    auto reader = TraceReader::Open(path_);
    ASSERT_TRUE(reader.ok());
    TraceStep out;
    out.query = {42.0f};
    const absl::Status s = reader->ReadStep(1, 0, &out);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr("element 2"));
    EXPECT_THAT(out.query, ElementsAre(42.0f));
    EXPECT_TRUE(reader->ReadStep(1, 1, &out).ok());
  }
}

TEST_F(TraceCorruptionTest, OutOfRangeReads) {
  auto reader = TraceReader::Open(path_);
  ASSERT_TRUE(reader.ok());
  TracePromptLayer p;
  TraceStep s;
  EXPECT_EQ(reader->ReadPromptLayer(2, &p).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reader->ReadStep(3, 0, &s).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(reader->ReadStep(0, 2, &s).code(), absl::StatusCode::kOutOfRange);
}

TEST(TraceReaderTest, MissingFileIsNotFound) {
  EXPECT_EQ(TraceReader::Open(TempPath("absent")).status().code(),
            absl::StatusCode::kNotFound);
}

TEST(TraceReaderTest, DirectoryIsInvalidArgument) {
  EXPECT_EQ(TraceReader::Open(::testing::TempDir()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(TraceWriterTest, RejectsOutOfOrderAndMalformedRecords) {
  const TraceHeader h = SmallHeader();
  const std::string path = TempPath("writer");
  auto writer = TraceWriter::Create(path, h);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ(writer->WritePromptLayer(1, PromptFor(h, 1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(writer->WriteStep(0, 0, StepFor(h, 0, 0)).code(),
            absl::StatusCode::kInvalidArgument);
  TracePromptLayer short_rec = PromptFor(h, 0);
  short_rec.keys.pop_back();
  EXPECT_EQ(writer->WritePromptLayer(0, short_rec).code(),
            absl::StatusCode::kInvalidArgument);
  TracePromptLayer nan_rec = PromptFor(h, 0);
  nan_rec.values[3] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_EQ(writer->WritePromptLayer(0, nan_rec).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(writer->WritePromptLayer(0, PromptFor(h, 0)).ok());
  ASSERT_TRUE(writer->WritePromptLayer(1, PromptFor(h, 1)).ok());
  EXPECT_EQ(writer->WriteStep(0, 1, StepFor(h, 0, 1)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(writer->Finish().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(access(path.c_str(), F_OK), 0);
}

TEST(TraceWriterTest, F16RejectsValuesBeyondItsRange) {
  const TraceHeader h = SmallHeader(TraceDtype::kF16);
  auto writer = TraceWriter::Create(TempPath("f16range"), h);
  ASSERT_TRUE(writer.ok());
  TracePromptLayer rec = PromptFor(h, 0);
  rec.keys[0] = 70000.0f;
  EXPECT_EQ(writer->WritePromptLayer(0, rec).code(),
            absl::StatusCode::kInvalidArgument);
  rec.keys[0] = 65504.0f;
  EXPECT_TRUE(writer->WritePromptLayer(0, rec).ok());
}

TEST(TraceWriterTest, AbandonedWriterLeavesNoFiles) {
  const std::string path = TempPath("abandoned");
  {
    auto writer = TraceWriter::Create(path, SmallHeader());
    ASSERT_TRUE(writer.ok());
    ASSERT_EQ(access((path + ".tmp").c_str(), F_OK), 0);
  }
  EXPECT_NE(access((path + ".tmp").c_str(), F_OK), 0);
  EXPECT_NE(access(path.c_str(), F_OK), 0);
}

TEST(HalfTest, KnownEncodings) {
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(0.1f), 0x2e66);
  EXPECT_EQ(FloatToHalf(5.9604645e-08f), 0x0001);  // smallest subnormal
  EXPECT_EQ(FloatToHalf(2049.0f), 0x6800);         // tie -> even (2048)
  EXPECT_EQ(FloatToHalf(2051.0f), 0x6802);         // tie -> even (2052)
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0x0001), 5.9604645e-08f);
  EXPECT_EQ(HalfToFloat(0xfbff), -65504.0f);
  for (uint32_t bits = 0; bits < 0x7c00; ++bits) {
    ASSERT_EQ(FloatToHalf(HalfToFloat(static_cast<uint16_t>(bits))), bits);
  }
}

}  // namespace
}  // namespace kvtier
