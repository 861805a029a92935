#include "common/page_layout.h"

#include "gtest/gtest.h"

namespace kvtier {
namespace {

PageLayout F16Layout() {
  return PageLayout{.page_size = 16, .n_kv_heads = 8, .head_dim = 128, .dtype = DType::kF16};
}

TEST(PageLayoutTest, F16PageBytes) {
  PageLayout l = F16Layout();
  ASSERT_TRUE(l.Validate().ok());
  EXPECT_EQ(l.PageBytes(), 2u * 16 * 8 * 128 * 2);
  EXPECT_EQ(l.ScaleBytes(), 0u);
}

TEST(PageLayoutTest, Int8AddsPerChannelKAndPerTokenVScales) {
  PageLayout l = F16Layout();
  l.dtype = DType::kInt8;
  EXPECT_EQ(l.ScaleBytes(), (8u * 128 + 16u * 8) * 4);
  EXPECT_EQ(l.PageBytes(), 2u * 16 * 8 * 128 + (8u * 128 + 16u * 8) * 4);
}

TEST(PageLayoutTest, Fp8AddsPerTokenScalesForKAndV) {
  PageLayout l = F16Layout();
  l.dtype = DType::kFp8E4M3;
  EXPECT_EQ(l.PageBytes(), 2u * 16 * 8 * 128 + 2u * 16 * 8 * 4);
}

TEST(PageLayoutTest, RejectsEachOutOfRangeField) {
  PageLayout l = F16Layout();
  l.page_size = 0;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l = F16Layout();
  l.n_kv_heads = PageLayout::kMaxKvHeads + 1;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l = F16Layout();
  l.head_dim = 0;
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l = F16Layout();
  l.dtype = static_cast<DType>(99);
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
  l = F16Layout();
  l.arrangement = static_cast<Arrangement>(0);
  EXPECT_EQ(l.Validate().code(), absl::StatusCode::kInvalidArgument);
}

TEST(PageLayoutTest, RejectsPagesOverTheByteLimit) {
  PageLayout l{.page_size = 1024, .n_kv_heads = 256, .head_dim = 1024, .dtype = DType::kF32};
  absl::Status s = l.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("exceeds"), std::string::npos);
}

TEST(PageLayoutTest, EncodeDecodeRoundTrip) {
  PageLayout l = F16Layout();
  l.arrangement = Arrangement::kTokenInterleaved;
  uint8_t buf[PageLayout::kEncodedBytes];
  l.Encode(buf);
  PageLayout back;
  ASSERT_TRUE(PageLayout::Decode(buf, &back).ok());
  EXPECT_EQ(back, l);
}

TEST(PageLayoutTest, DecodeRejectsInvalidEncodings) {
  uint8_t buf[PageLayout::kEncodedBytes];
  F16Layout().Encode(buf);
  buf[14] = 1;
  PageLayout out;
  EXPECT_EQ(PageLayout::Decode(buf, &out).code(), absl::StatusCode::kInvalidArgument);
  F16Layout().Encode(buf);
  buf[12] = 42;  // dtype
  EXPECT_EQ(PageLayout::Decode(buf, &out).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvtier
