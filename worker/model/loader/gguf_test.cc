// GGUF parsing of files written by GgufTestWriter: values, tensor decoding
// of every supported type, and each kind of damage getting its error code.
#include "worker/model/loader/gguf.h"

#include <fstream>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "worker/model/loader/gguf_test_writer.h"

namespace kvtier::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string WriteTemp(const std::string& name, const std::string& bytes) {
  const std::string path = UniqueTempPath(name);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), bytes.size());
  return path;
}

absl::StatusOr<std::unique_ptr<GgufFile>> OpenBytes(const std::string& bytes) {
  return GgufFile::Open(WriteTemp("t.gguf", bytes));
}

std::string U16(uint16_t v) { return std::string{char(v & 0xff), char(v >> 8)}; }

GgufTestWriter SmallFile() {
  GgufTestWriter w;
  w.AddString("general.architecture", "llama");
  w.AddUint32("llama.block_count", 2);
  w.AddFloat32("llama.rope.freq_base", 100000.0f);
  w.AddBool("tokenizer.ggml.add_bos_token", true);
  w.AddStringArray("tokenizer.ggml.tokens", {"a", "b", "<|x|>"});
  w.AddInt32Array("tokenizer.ggml.token_type", {1, 1, 3});
  w.AddF32Tensor("vec", {4}, {1.5f, -2.0f, 0.0f, 3.25f});
  w.AddF32Tensor("mat", {2, 3}, {1, 2, 3, 4, 5, 6});
  return w;
}

TEST(GgufTest, ParsesMetadataAndTensors) {
  auto f = OpenBytes(SmallFile().Build());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->version(), 3u);
  EXPECT_EQ(*(*f)->GetString("general.architecture"), "llama");
  EXPECT_EQ(*(*f)->GetUint("llama.block_count"), 2u);
  EXPECT_EQ(*(*f)->GetFloat("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ(*(*f)->GetBool("tokenizer.ggml.add_bos_token"), true);
  EXPECT_THAT(*(*f)->GetStringArray("tokenizer.ggml.tokens"),
              ElementsAre("a", "b", "<|x|>"));
  EXPECT_THAT(*(*f)->GetIntArray("tokenizer.ggml.token_type"),
              ElementsAre(1, 1, 3));
  ASSERT_EQ((*f)->tensors().size(), 2u);
  const GgufTensor* mat = (*f)->FindTensor("mat");
  ASSERT_NE(mat, nullptr);
  EXPECT_THAT(mat->dims, ElementsAre(2, 3));
  EXPECT_EQ(mat->n_values, 6u);
  EXPECT_THAT(*(*f)->ReadTensor("vec", {4}),
              ElementsAre(1.5f, -2.0f, 0.0f, 3.25f));
  EXPECT_THAT(*(*f)->ReadTensor("mat", {2, 3}), ElementsAre(1, 2, 3, 4, 5, 6));
}

TEST(GgufTest, GetterErrors) {
  auto f = OpenBytes(SmallFile().Build());
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->GetUint("absent").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ((*f)->GetUint("general.architecture").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->GetString("llama.block_count").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->ReadTensor("mat", {3, 2}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*f)->ReadTensor("nope", {1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GgufTest, DecodesF16) {
  GgufTestWriter w;
  // 1.0, -2.5, 0.5, 65504 (largest half), 2^-24 (smallest subnormal), -0.
  w.AddTensor("h", 1, {6},
              U16(0x3C00) + U16(0xC100) + U16(0x3800) + U16(0x7BFF) +
                  U16(0x0001) + U16(0x8000));
  auto f = OpenBytes(w.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(*(*f)->ReadTensor("h", {6}),
              ElementsAre(1.0f, -2.5f, 0.5f, 65504.0f, 5.9604645e-8f, -0.0f));
}

TEST(GgufTest, DecodesQ8_0) {
  std::string block = U16(0x3800);  // d = 0.5
  for (int j = 0; j < 32; ++j) block += static_cast<char>(j * 8 - 128);
  GgufTestWriter w;
  w.AddTensor("q", 8, {32}, block);
  auto f = OpenBytes(w.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<float> v = *(*f)->ReadTensor("q", {32});
  EXPECT_EQ(v[0], -64.0f);   // -128 * 0.5
  EXPECT_EQ(v[16], 0.0f);    // 0
  EXPECT_EQ(v[31], 60.0f);   // 120 * 0.5
}

TEST(GgufTest, DecodesQ4_0) {
  std::string block = U16(0x4000);  // d = 2
  for (int j = 0; j < 16; ++j) block += static_cast<char>((15 - j) | (j << 4));
  GgufTestWriter w;
  w.AddTensor("q", 2, {32}, block);
  auto f = OpenBytes(w.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<float> v = *(*f)->ReadTensor("q", {32});
  EXPECT_EQ(v[0], 14.0f);    // low nibble 15: (15 - 8) * 2
  EXPECT_EQ(v[15], -16.0f);  // low nibble 0
  EXPECT_EQ(v[16], -16.0f);  // high nibble of qs[0] = 0
  EXPECT_EQ(v[31], 14.0f);   // high nibble of qs[15] = 15
}

TEST(GgufTest, DecodesQ4_1) {
  std::string block = U16(0x3400) + U16(0xBC00);  // d = 0.25, m = -1
  for (int j = 0; j < 16; ++j) block += static_cast<char>(j | ((15 - j) << 4));
  GgufTestWriter w;
  w.AddTensor("q", 3, {32}, block);
  auto f = OpenBytes(w.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<float> v = *(*f)->ReadTensor("q", {32});
  EXPECT_EQ(v[0], -1.0f);    // 0 * 0.25 - 1
  EXPECT_EQ(v[15], 2.75f);   // 15 * 0.25 - 1
  EXPECT_EQ(v[16], 2.75f);   // high nibble of qs[0] = 15
  EXPECT_EQ(v[31], -1.0f);
}

TEST(GgufTest, EveryTruncationIsDataLoss) {
  const std::string bytes = SmallFile().Build();
  const std::string path = WriteTemp("t.gguf", "");
  for (size_t n = 0; n < bytes.size(); ++n) {
    auto f = OpenBytes(bytes.substr(0, n));
    ASSERT_FALSE(f.ok()) << "prefix of " << n << " bytes parsed";
    EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss)
        << n << ": " << f.status();
    // Every error names the file, the parser's own included.
    EXPECT_TRUE(absl::StartsWith(f.status().message(), path)) << f.status();
  }
}

TEST(GgufTest, BadMagic) {
  GgufTestWriter w = SmallFile();
  w.magic = 0x46554746;
  auto f = OpenBytes(w.Build());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("not a GGUF file"));
}

TEST(GgufTest, BadVersion) {
  for (uint32_t version : {0u, 1u, 4u}) {
    GgufTestWriter w = SmallFile();
    w.version = version;
    auto f = OpenBytes(w.Build());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(f.status().message(), HasSubstr("version"));
  }
  GgufTestWriter v2 = SmallFile();
  v2.version = 2;
  EXPECT_TRUE(OpenBytes(v2.Build()).ok());
}

TEST(GgufTest, TensorOutOfBounds) {
  GgufTestWriter w = SmallFile();
  const int t = w.AddTensor("late", 0, {8}, std::string(32, '\0'));
  w.ForceOffset(t, 1024);  // past the end of the data section
  auto f = OpenBytes(w.Build());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(f.status().message(), HasSubstr("past the end"));
}

// Each tensor is read on its own: tensors naming the same bytes would make
// a small file cost a large model's memory.
TEST(GgufTest, TensorsThatShareBytesAreRefused) {
  GgufTestWriter w = SmallFile();
  const int t = w.AddTensor("again", 0, {4}, std::string(16, '\0'));
  w.ForceOffset(t, 0);  // the bytes of "vec"
  auto f = OpenBytes(w.Build());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("overlap"));
}

// 2^32 x 2^32 values wrap to 0 in 64 bits: refused as a bad dim.
TEST(GgufTest, DimsWhoseProductWrapsAreRefused) {
  GgufTestWriter w;
  w.AddTensor("huge", 0, {uint64_t{1} << 32, uint64_t{1} << 32}, "");
  auto f = OpenBytes(w.Build());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("bad dim 4294967296"));
}

// A u8 array element is a byte in the file and a GgufValue in memory: the
// elements of all arrays are bounded together.
TEST(GgufTest, MetadataArraysAreBoundedTogether) {
  auto u8_array = [](uint64_t n) { return EncodeU32(0) + EncodeU64(n) + std::string(n, '\1'); };
  GgufTestWriter w;
  w.AddRaw("a", 9, u8_array(16));
  EXPECT_TRUE(OpenBytes(w.Build()).ok());
  // One element more than the 2^22 both may hold: refused before the
  // second array's elements are expanded.
  w.AddRaw("b", 9, u8_array((uint64_t{1} << 22) - 15));
  auto f = OpenBytes(w.Build());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("arrays hold more than 4194304"));
}

TEST(GgufTest, MisalignedOffset) {
  GgufTestWriter w = SmallFile();
  w.ForceOffset(0, 4);
  EXPECT_EQ(OpenBytes(w.Build()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GgufTest, UnknownTensorType) {
  for (uint32_t type : {14u /* Q6_K, unsupported */, 99u}) {
    GgufTestWriter w;
    w.AddTensor("x", type, {256}, std::string(1024, '\0'));
    auto f = OpenBytes(w.Build());
    EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(f.status().message(), HasSubstr("type"));
  }
}

TEST(GgufTest, RowNotWholeBlocks) {
  GgufTestWriter w;
  w.AddTensor("x", 8, {16}, std::string(17, '\0'));  // Q8_0 needs 32
  EXPECT_EQ(OpenBytes(w.Build()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GgufTest, UnknownValueType) {
  GgufTestWriter w;
  w.AddRaw("k", 13, EncodeU32(0));
  auto f = OpenBytes(w.Build());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(f.status().message(), HasSubstr("value type"));
}

TEST(GgufTest, HugeArrayCountIsDataLossWithoutAllocating) {
  GgufTestWriter w;
  w.AddRaw("k", 9, EncodeU32(6) + EncodeU64(uint64_t{1} << 60));
  EXPECT_EQ(OpenBytes(w.Build()).status().code(), absl::StatusCode::kDataLoss);
}

TEST(GgufTest, HugeStringLengthIsDataLoss) {
  GgufTestWriter w;
  w.AddRaw("k", 8, EncodeU64(~uint64_t{0}));
  EXPECT_EQ(OpenBytes(w.Build()).status().code(), absl::StatusCode::kDataLoss);
}

TEST(GgufTest, DuplicateKeyAndTensor) {
  GgufTestWriter keys;
  keys.AddUint32("a", 1);
  keys.AddUint32("a", 2);
  EXPECT_EQ(OpenBytes(keys.Build()).status().code(),
            absl::StatusCode::kInvalidArgument);
  GgufTestWriter tensors;
  tensors.AddF32Tensor("t", {1}, {1.0f});
  tensors.AddF32Tensor("t", {1}, {2.0f});
  EXPECT_EQ(OpenBytes(tensors.Build()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GgufTest, BadAlignmentAndDims) {
  GgufTestWriter align;
  align.AddUint32("general.alignment", 24);
  EXPECT_EQ(OpenBytes(align.Build()).status().code(),
            absl::StatusCode::kInvalidArgument);
  GgufTestWriter zero_dim;
  zero_dim.AddTensor("z", 0, {0}, "");
  EXPECT_EQ(OpenBytes(zero_dim.Build()).status().code(),
            absl::StatusCode::kInvalidArgument);
  GgufTestWriter five_dims;
  five_dims.AddTensor("z", 0, {1, 1, 1, 1, 1}, std::string(4, '\0'));
  EXPECT_EQ(OpenBytes(five_dims.Build()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(GgufTest, CustomAlignmentIsHonoured) {
  GgufTestWriter w;
  w.alignment = 64;
  w.AddUint32("general.alignment", 64);
  w.AddF32Tensor("a", {3}, {1, 2, 3});
  w.AddF32Tensor("b", {2}, {4, 5});
  auto f = OpenBytes(w.Build());
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_THAT(*(*f)->ReadTensor("b", {2}), ElementsAre(4.0f, 5.0f));
}

}  // namespace
}  // namespace kvtier::model
