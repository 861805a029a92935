// Helpers shared by the CPU kernels: argument checks, chunked parallel loops
// and the vectorisable inner loops. Not part of the kernels/ API.
#ifndef KVTIER_KERNELS_CPU_INTERNAL_H_
#define KVTIER_KERNELS_CPU_INTERNAL_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "kernels/dtype.h"
#include "kernels/thread_pool.h"

// Returns the status of `expr` from the enclosing function unless OK.
#define KVTIER_KERNELS_RETURN_IF_ERROR(expr)               \
  do {                                                     \
    ::absl::Status kvtier_kernels_s_ = (expr);             \
    if (!kvtier_kernels_s_.ok()) return kvtier_kernels_s_; \
  } while (0)

// Hot loops get an AVX2 and an AVX-512 clone besides the baseline one,
// picked at load time (GCC function multi-versioning), so no -march is
// assumed. Results do not depend on the clone: the reductions use a fixed
// lane order and kernels/CMakeLists.txt turns fp contraction off (GCC fuses
// a*b+c into FMA by default in C++, even in ISO mode). Off under
// ThreadSanitizer, whose instrumented ifunc resolvers would run before the
// sanitizer's runtime is up.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
#define KVTIER_KERNELS_MULTIVERSION __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define KVTIER_KERNELS_MULTIVERSION
#endif

namespace kvtier::kernels::internal {

// Shape limits, equal to common/page_layout.h's PageLayout limits.
inline constexpr uint32_t kMaxPageSize = 1024;
inline constexpr uint32_t kMaxKvHeads = 256;
inline constexpr uint32_t kMaxHeadDim = 1024;

// INVALID_ARGUMENT "<what>: <name> = v, want [lo, hi]" unless lo <= v <= hi.
absl::Status CheckRange(const char* what, const char* name, uint64_t v, uint64_t lo, uint64_t hi);
absl::Status CheckNotNull(const char* what, const char* name, const void* p);
absl::Status CheckFloatType(const char* what, const char* name, ScalarType t);
// indptr[0..n] starts at 0, never decreases and ends at `total`.
absl::Status CheckIndptr(const char* what, const char* name, const int32_t* indptr, size_t n,
                         uint32_t total);
// Every ids[i], i < n, lies in [0, limit).
absl::Status CheckIds(const char* what, const char* name, const int32_t* ids, size_t n,
                      uint32_t limit);

// Splits [0, n) into chunks of about `grain` items (at least one chunk per
// thread when n allows) and runs fn(begin, end) for each, in parallel.
void ParallelChunks(ThreadPool* pool, size_t n, size_t grain,
                    absl::FunctionRef<void(size_t, size_t)> fn);

// Converts n elements of `t` starting at element `offset` of `src` to fp32.
void ToFloat(const void* src, ScalarType t, size_t offset, size_t n, float* dst);

// Lane count of the hand-split reductions below. Summation order is fixed
// (lane j sums elements j, j+16, ...; lanes added in order), so results are
// deterministic and the compiler can vectorise without -ffast-math.
inline constexpr size_t kLanes = 16;

inline float SumLanes(const float* acc) {
  float s = 0.0f;
  for (size_t j = 0; j < kLanes; ++j) s += acc[j];
  return s;
}

inline float Dot(const float* a, const float* b, size_t n) {
  float acc[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j];
  }
  for (size_t j = 0; i + j < n; ++j) acc[j] += a[i + j] * b[i + j];
  return SumLanes(acc);
}

// a.b + c.d
inline float Dot2(const float* a, const float* b, const float* c, const float* d, size_t n) {
  float acc[kLanes] = {};
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) acc[j] += a[i + j] * b[i + j] + c[i + j] * d[i + j];
  }
  for (size_t j = 0; i + j < n; ++j) acc[j] += a[i + j] * b[i + j] + c[i + j] * d[i + j];
  return SumLanes(acc);
}

}  // namespace kvtier::kernels::internal

#endif  // KVTIER_KERNELS_CPU_INTERNAL_H_
