#include "kernels/dtype.h"

#include <cmath>
#include <limits>

#include "gtest/gtest.h"

namespace kvtier::kernels {
namespace {

float Pow2(int e) { return std::ldexp(1.0f, e); }

TEST(HalfTest, KnownValues) {
  EXPECT_EQ(FloatToHalf(0.0f), 0x0000);
  EXPECT_EQ(FloatToHalf(-0.0f), 0x8000);
  EXPECT_EQ(FloatToHalf(1.0f), 0x3c00);
  EXPECT_EQ(FloatToHalf(-2.0f), 0xc000);
  EXPECT_EQ(FloatToHalf(0.1f), 0x2e66);
  EXPECT_EQ(FloatToHalf(65504.0f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65519.99f), 0x7bff);
  EXPECT_EQ(FloatToHalf(65520.0f), 0x7c00);  // ties away from 65504 (odd) to inf
  EXPECT_EQ(FloatToHalf(1e30f), 0x7c00);
  EXPECT_EQ(FloatToHalf(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(FloatToHalf(Pow2(-24)), 0x0001);             // smallest subnormal
  EXPECT_EQ(FloatToHalf(Pow2(-25)), 0x0000);             // tie -> even (0)
  EXPECT_EQ(FloatToHalf(3 * Pow2(-25)), 0x0002);         // tie -> even (2)
  EXPECT_EQ(FloatToHalf(Pow2(-14)), 0x0400);             // smallest normal
  EXPECT_EQ(FloatToHalf(1.0f + Pow2(-11)), 0x3c00);      // tie -> even
  EXPECT_EQ(FloatToHalf(1.0f + 3 * Pow2(-11)), 0x3c02);  // tie -> even
  const uint16_t nan = FloatToHalf(std::numeric_limits<float>::quiet_NaN());
  EXPECT_EQ(nan & 0x7c00, 0x7c00);
  EXPECT_NE(nan & 0x03ff, 0);

  EXPECT_EQ(HalfToFloat(0x0001), Pow2(-24));
  EXPECT_EQ(HalfToFloat(0x03ff), 1023 * Pow2(-24));
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x3555), 0.333251953125f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.0f);
  EXPECT_TRUE(std::isinf(HalfToFloat(0x7c00)));
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_TRUE(std::signbit(HalfToFloat(0x8000)));
}

TEST(HalfTest, EveryValueRoundTripsAndMidpointsTieToEven) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = HalfToFloat(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToHalf(f), h) << h;
    if ((h & 0x7fff) >= 0x7bff) continue;  // no finite successor
    const float next = HalfToFloat(static_cast<uint16_t>(h + 1));
    const float mid = 0.5f * (f + next);  // exact: one more bit than fp16
    const uint16_t even = (h & 1) == 0 ? h : h + 1;
    ASSERT_EQ(FloatToHalf(mid), even) << h;
    const bool neg = (h & 0x8000) != 0;
    const float towards_next = std::nextafter(mid, neg ? -INFINITY : INFINITY);
    const float towards_h = std::nextafter(mid, neg ? INFINITY : -INFINITY);
    ASSERT_EQ(FloatToHalf(towards_next), h + 1) << h;
    ASSERT_EQ(FloatToHalf(towards_h), h) << h;
  }
}

TEST(HalfTest, DirectedRoundingBracketsTheValue) {
  const float v = 1.0f + Pow2(-12);  // between 1 and 1 + 2^-10
  EXPECT_EQ(FloatToHalfDirected(v, true), 0x3c01);
  EXPECT_EQ(FloatToHalfDirected(v, false), 0x3c00);
  EXPECT_EQ(FloatToHalfDirected(-v, true), 0xbc00);
  EXPECT_EQ(FloatToHalfDirected(-v, false), 0xbc01);
  EXPECT_EQ(FloatToHalfDirected(1.0f, true), 0x3c00);  // exact stays
  EXPECT_EQ(FloatToHalfDirected(1e-9f, true), 0x0001);
  EXPECT_EQ(FloatToHalfDirected(1e-9f, false), 0x0000);
  EXPECT_EQ(FloatToHalfDirected(-1e-9f, false), 0x8001);
  EXPECT_EQ(FloatToHalfDirected(70000.0f, false), 0x7bff);  // 65504, not inf
  EXPECT_EQ(FloatToHalfDirected(70000.0f, true), 0x7c00);
}

TEST(BF16Test, KnownValues) {
  EXPECT_EQ(FloatToBF16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBF16(-1.0f), 0xbf80);
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f818000u)), 0x3f82);  // tie -> even
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(FloatToBF16(BitsToFloat(0x3f807fffu)), 0x3f80);
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::max()), 0x7f80);  // rounds to inf
  EXPECT_EQ(FloatToBF16(std::numeric_limits<float>::infinity()), 0x7f80);
  const uint16_t nan = FloatToBF16(BitsToFloat(0x7f800001u));  // signalling payload
  EXPECT_TRUE(std::isnan(BF16ToFloat(nan)));
  EXPECT_EQ(BF16ToFloat(0x4049), 3.140625f);
  for (uint32_t b = 0; b < 0x10000; ++b) {
    const float f = BF16ToFloat(static_cast<uint16_t>(b));
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToBF16(f), b);
  }
}

TEST(Fp8E4M3Test, KnownValues) {
  EXPECT_EQ(FloatToFp8E4M3(0.0f), 0x00);
  EXPECT_EQ(FloatToFp8E4M3(-0.0f), 0x80);
  EXPECT_EQ(FloatToFp8E4M3(1.0f), 0x38);
  EXPECT_EQ(FloatToFp8E4M3(-1.0f), 0xb8);
  EXPECT_EQ(FloatToFp8E4M3(448.0f), 0x7e);
  EXPECT_EQ(FloatToFp8E4M3(-448.0f), 0xfe);
  EXPECT_EQ(FloatToFp8E4M3(460.0f), 0x7e);  // saturates
  EXPECT_EQ(FloatToFp8E4M3(1e30f), 0x7e);
  EXPECT_EQ(FloatToFp8E4M3(-INFINITY), 0xfe);
  EXPECT_EQ(FloatToFp8E4M3(NAN), 0x7f);
  EXPECT_EQ(FloatToFp8E4M3(Pow2(-9)), 0x01);        // smallest subnormal
  EXPECT_EQ(FloatToFp8E4M3(7 * Pow2(-9)), 0x07);    // largest subnormal
  EXPECT_EQ(FloatToFp8E4M3(Pow2(-6)), 0x08);        // smallest normal
  EXPECT_EQ(FloatToFp8E4M3(Pow2(-10)), 0x00);       // tie -> even (0)
  EXPECT_EQ(FloatToFp8E4M3(3 * Pow2(-10)), 0x02);   // tie -> even (2)
  EXPECT_EQ(FloatToFp8E4M3(15 * Pow2(-10)), 0x08);  // tie 7|8 -> 8 = 2^-6
  EXPECT_EQ(FloatToFp8E4M3(1.0625f), 0x38);         // tie between 1 and 1.125 -> even
  EXPECT_EQ(FloatToFp8E4M3(1.1875f), 0x3a);         // tie between 1.125 and 1.25 -> even
  EXPECT_EQ(FloatToFp8E4M3(1.07f), 0x39);
  EXPECT_EQ(Fp8E4M3ToFloat(0x7e), 448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), Pow2(-9));
  EXPECT_EQ(Fp8E4M3ToFloat(0x3a), 1.25f);
  EXPECT_EQ(Fp8E4M3ToFloat(0xc0), -2.0f);
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7f)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xff)));
}

TEST(Fp8E4M3Test, EveryCodeRoundTripsAndMidpointsTieToEven) {
  for (uint32_t v = 0; v < 0x100; ++v) {
    if ((v & 0x7f) == 0x7f) continue;
    const float f = Fp8E4M3ToFloat(static_cast<uint8_t>(v));
    ASSERT_EQ(FloatToFp8E4M3(f), v) << v;
    if ((v & 0x7f) == 0x7e) continue;
    const float next = Fp8E4M3ToFloat(static_cast<uint8_t>(v + 1));
    const float mid = 0.5f * (f + next);
    ASSERT_EQ(FloatToFp8E4M3(mid), (v & 1) == 0 ? v : v + 1) << v;
  }
}

TEST(RoundHalfEvenTest, Ties) {
  EXPECT_EQ(RoundHalfEven(0.5f), 0.0f);
  EXPECT_EQ(RoundHalfEven(1.5f), 2.0f);
  EXPECT_EQ(RoundHalfEven(2.5f), 2.0f);
  EXPECT_EQ(RoundHalfEven(-2.5f), -2.0f);
  EXPECT_EQ(RoundHalfEven(-126.6f), -127.0f);
  EXPECT_EQ(RoundHalfEven(126.4f), 126.0f);
}

TEST(ScalarTypeTest, BytesAndNames) {
  EXPECT_EQ(ScalarBytes(ScalarType::kF32), 4u);
  EXPECT_EQ(ScalarBytes(ScalarType::kBF16), 2u);
  EXPECT_EQ(ScalarBytes(ScalarType::kFp8E4M3), 1u);
  EXPECT_STREQ(ScalarTypeName(ScalarType::kBF16), "bf16");
  EXPECT_FALSE(IsFloatType(ScalarType::kInt8));
}

}  // namespace
}  // namespace kvtier::kernels
