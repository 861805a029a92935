#include "kvtier/v1/convert.h"

#include <string>

#include "gtest/gtest.h"

namespace kvtier::v1 {
namespace {

v1::PageLayout GoodLayout() {
  v1::PageLayout l;
  l.set_page_size(16);
  l.set_n_kv_heads(8);
  l.set_head_dim(128);
  l.set_dtype(DTYPE_BF16);
  l.set_arrangement(ARRANGEMENT_TOKEN_INTERLEAVED);
  return l;
}

TEST(ConvertTest, LayoutRoundTrip) {
  absl::StatusOr<kvtier::PageLayout> layout = LayoutFromProto(GoodLayout(), "layout");
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->page_size, 16u);
  EXPECT_EQ(layout->n_kv_heads, 8u);
  EXPECT_EQ(layout->head_dim, 128u);
  EXPECT_EQ(layout->dtype, kvtier::DType::kBF16);
  EXPECT_EQ(layout->arrangement, kvtier::Arrangement::kTokenInterleaved);
  EXPECT_EQ(layout->PageBytes(), 2u * 16 * 8 * 128 * 2);
  v1::PageLayout back;
  LayoutToProto(*layout, &back);
  EXPECT_EQ(back.SerializeAsString(), GoodLayout().SerializeAsString());
}

TEST(ConvertTest, EveryDTypeRoundTrips) {
  for (v1::DType d : {DTYPE_F32, DTYPE_F16, DTYPE_BF16, DTYPE_FP8_E4M3, DTYPE_INT8}) {
    absl::StatusOr<kvtier::DType> c = DTypeFromProto(d, "x");
    ASSERT_TRUE(c.ok());
    EXPECT_EQ(DTypeToProto(*c), d);
    EXPECT_EQ(static_cast<int>(*c), static_cast<int>(d));  // shared numbering
  }
}

TEST(ConvertTest, UnspecifiedDTypeIsRejectedWithFieldName) {
  v1::PageLayout l = GoodLayout();
  l.set_dtype(DTYPE_UNSPECIFIED);
  absl::StatusOr<kvtier::PageLayout> r = LayoutFromProto(l, "pages[2].layout");
  ASSERT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("pages[2].layout"), std::string::npos);
  EXPECT_NE(r.status().message().find("dtype"), std::string::npos);
}

TEST(ConvertTest, UnknownEnumNumbersAreRejected) {
  EXPECT_EQ(DTypeFromProto(static_cast<v1::DType>(77), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ArrangementFromProto(static_cast<v1::Arrangement>(9), "x").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ArrangementFromProto(ARRANGEMENT_UNSPECIFIED, "x").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ConvertTest, OutOfRangeLayoutIsRejected) {
  v1::PageLayout l = GoodLayout();
  l.set_page_size(0);
  EXPECT_EQ(LayoutFromProto(l, "x").status().code(), absl::StatusCode::kInvalidArgument);
  l = GoodLayout();
  l.set_head_dim(1025);
  EXPECT_EQ(LayoutFromProto(l, "x").status().code(), absl::StatusCode::kInvalidArgument);
  // 1024 * 256 * 1024 * 2 * 4 bytes is far above the 64 MiB page limit.
  l = GoodLayout();
  l.set_page_size(1024);
  l.set_n_kv_heads(256);
  l.set_head_dim(1024);
  l.set_dtype(DTYPE_F32);
  absl::StatusOr<kvtier::PageLayout> r = LayoutFromProto(l, "x");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ConvertTest, KeyRoundTripAndHashLength) {
  kvtier::PageKey key{.hash = {.hi = 0x0102030405060708, .lo = 0x1112131415161718}, .layer = 7};
  v1::PageKey wire;
  KeyToProto(key, &wire);
  ASSERT_EQ(wire.hash().size(), 16u);
  EXPECT_EQ(static_cast<uint8_t>(wire.hash()[0]), 0x01);  // high half first
  EXPECT_EQ(static_cast<uint8_t>(wire.hash()[15]), 0x18);
  absl::StatusOr<kvtier::PageKey> back = KeyFromProto(wire, "key");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, key);

  wire.set_hash(std::string(15, 'a'));
  absl::StatusOr<kvtier::PageKey> bad = KeyFromProto(wire, "keys[4]");
  ASSERT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("keys[4]"), std::string::npos);
  EXPECT_NE(bad.status().message().find("got 15"), std::string::npos);
  wire.set_hash("");
  EXPECT_FALSE(KeyFromProto(wire, "k").ok());
}

TEST(ConvertTest, StatusRoundTrip) {
  EXPECT_TRUE(ToGrpcStatus(absl::OkStatus()).ok());
  grpc::Status g = ToGrpcStatus(absl::DataLossError("checksum"));
  EXPECT_EQ(g.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(g.error_message(), "checksum");
  absl::Status a = FromGrpcStatus(grpc::Status(grpc::StatusCode::UNAVAILABLE, "down"));
  EXPECT_EQ(a.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(a.message(), "down");
  EXPECT_TRUE(FromGrpcStatus(grpc::Status::OK).ok());
  // 20 is no gRPC code but lies in the enum's range of values (0..31), so
  // the cast is defined.
  EXPECT_EQ(FromGrpcStatus(grpc::Status(static_cast<grpc::StatusCode>(20), "?")).code(),
            absl::StatusCode::kUnknown);
}

}  // namespace
}  // namespace kvtier::v1
