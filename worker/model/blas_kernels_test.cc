#include "worker/model/blas_kernels.h"

#include "gtest/gtest.h"

namespace kvtier::model {
namespace {

constexpr CpuVectorFeatures kSse{};
constexpr CpuVectorFeatures kAvx2{.avx2_fma = true};
constexpr CpuVectorFeatures kAvx512{.avx2_fma = true, .avx512 = true};

TEST(BlasKernelsTest, TheCoreFollowsTheWidestVectorsTheCpuHas) {
  EXPECT_EQ(BlasCoreFor(kSse), "");
  EXPECT_EQ(BlasCoreFor(kAvx2), "Haswell");
  EXPECT_EQ(BlasCoreFor(kAvx512), "SkylakeX");
}

TEST(BlasKernelsTest, OnlyAPreAvx2FallbackIsReplaced) {
  EXPECT_EQ(BetterBlasCore("Prescott", kAvx512), "SkylakeX");
  EXPECT_EQ(BetterBlasCore("PRESCOTT", kAvx512), "SkylakeX");
  EXPECT_EQ(BetterBlasCore("Nehalem", kAvx2), "Haswell");
  EXPECT_EQ(BetterBlasCore("sandybridge", kAvx2), "Haswell");
  // A CPU without AVX2 keeps whatever the library chose.
  EXPECT_EQ(BetterBlasCore("Prescott", kSse), "");
  // A known model keeps its own choice, even a narrower one.
  EXPECT_EQ(BetterBlasCore("Haswell", kAvx512), "");
  EXPECT_EQ(BetterBlasCore("SkylakeX", kAvx512), "");
  EXPECT_EQ(BetterBlasCore("Cooperlake", kAvx512), "");
  EXPECT_EQ(BetterBlasCore("Zen", kAvx2), "");
  EXPECT_EQ(BetterBlasCore("", kAvx512), "");
}

TEST(BlasKernelsTest, DetectionIsConsistent) {
  const CpuVectorFeatures f = DetectCpuVectorFeatures();
  // Each level implies the one below it.
  EXPECT_TRUE(!f.avx512 || f.avx2_fma);
#if defined(__x86_64__)
  EXPECT_EQ(f.avx2_fma, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
#endif
}

}  // namespace
}  // namespace kvtier::model
