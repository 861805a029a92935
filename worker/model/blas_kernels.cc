#include "worker/model/blas_kernels.h"

#include <cblas.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "absl/base/const_init.h"
#include "absl/strings/ascii.h"
#include "absl/synchronization/mutex.h"
#include "kernels/thread_pool.h"

namespace kvtier::model {

CpuVectorFeatures DetectCpuVectorFeatures() {
  CpuVectorFeatures f;
#if defined(__x86_64__)
  __builtin_cpu_init();
  f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = f.avx2_fma && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
  return f;
}

std::string BlasCoreFor(const CpuVectorFeatures& cpu) {
  if (cpu.avx512) return "SkylakeX";
  if (cpu.avx2_fma) return "Haswell";
  return "";
}

std::string BetterBlasCore(const std::string& chosen, const CpuVectorFeatures& cpu) {
  // The kernel sets OpenBLAS falls back to on x86-64 CPUs it does not know.
  static constexpr const char* kFallbacks[] = {"prescott", "core2", "penryn", "dunnington",
                                               "nehalem", "atom", "sandybridge"};
  const std::string name = absl::AsciiStrToLower(chosen);
  bool fallback = false;
  for (const char* f : kFallbacks) fallback = fallback || name == f;
  return fallback ? BlasCoreFor(cpu) : "";
}

void UseCpuBlasKernels(const char* program, char** argv) {
  if (std::getenv("OPENBLAS_CORETYPE") != nullptr) return;
  const char* chosen = openblas_get_corename();
  const std::string better =
      BetterBlasCore(chosen != nullptr ? chosen : "", DetectCpuVectorFeatures());
  if (better.empty()) return;
  std::fprintf(stderr,
               "%s: OpenBLAS chose its %s kernels for this CPU, which has wider vectors; "
               "running again with OPENBLAS_CORETYPE=%s (set the variable to choose)\n",
               program, chosen, better.c_str());
  std::fflush(stderr);
  if (setenv("OPENBLAS_CORETYPE", better.c_str(), 1) != 0) return;
  execv("/proc/self/exe", argv);
  std::fprintf(stderr, "%s: running again failed (%s); going on with the %s kernels\n", program,
               std::strerror(errno), chosen);
  unsetenv("OPENBLAS_CORETYPE");
}

void ParallelBlasFor(size_t n, absl::FunctionRef<void(size_t)> fn) {
  ABSL_CONST_INIT static absl::Mutex mu(absl::kConstInit);
  // One loop at a time, so that none restores the thread count while
  // another still runs.
  absl::MutexLock lock(&mu);
  static kernels::ThreadPool* const pool = new kernels::ThreadPool(0);
  const int blas_threads = openblas_get_num_threads();
  openblas_set_num_threads(1);
  pool->ParallelFor(n, fn);
  openblas_set_num_threads(blas_threads);
}

}  // namespace kvtier::model
