#include "worker/model/blas_kernels.h"

#include <cblas.h>

#include <atomic>
#include <thread>
#include <vector>

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

TEST(ParallelBlasForTest, RunsEachTaskOnceWithOneBlasThreadThenRestoresTheCount) {
  openblas_set_num_threads(2);
  for (size_t n : {size_t{0}, size_t{1}, size_t{37}}) {
    std::vector<std::atomic<int>> runs(n);
    std::atomic<int> more_than_one{0};
    ParallelBlasFor(n, [&](size_t i) {
      runs[i].fetch_add(1);
      if (openblas_get_num_threads() != 1) more_than_one.fetch_add(1);
    });
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(runs[i].load(), 1) << i << " of " << n;
    EXPECT_EQ(more_than_one.load(), 0);
    EXPECT_EQ(openblas_get_num_threads(), 2);
  }
}

TEST(ParallelBlasForTest, ConcurrentLoopsDoNotLeaveOneBlasThread) {
  openblas_set_num_threads(2);
  std::atomic<int> seen_more{0};
  std::vector<std::thread> callers;
  for (int c = 0; c < 4; ++c) {
    callers.emplace_back([&] {
      for (int rep = 0; rep < 50; ++rep) {
        ParallelBlasFor(8, [&](size_t) {
          if (openblas_get_num_threads() != 1) seen_more.fetch_add(1);
        });
      }
    });
  }
  for (std::thread& t : callers) t.join();
  EXPECT_EQ(seen_more.load(), 0);
  EXPECT_EQ(openblas_get_num_threads(), 2);
}

}  // namespace
}  // namespace kvtier::model
