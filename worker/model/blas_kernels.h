#ifndef KVTIER_WORKER_MODEL_BLAS_KERNELS_H_
#define KVTIER_WORKER_MODEL_BLAS_KERNELS_H_

// Which of OpenBLAS's kernel sets the dense layers run on, and how prompt
// attention shares the cores with it (ParallelBlasFor).
//
// OpenBLAS chooses its kernels from the CPU model when it loads. A model
// newer than its table (Debian 12's 0.3.21 does not know Intel family 6
// model 207, for one) gets its baseline SSE3 kernels ("Prescott") although
// the CPU has AVX2 or AVX-512: on such a host SmolLM2's prefill ran 1.7x
// and its decode 1.9x slower than with the AVX-512 kernels. The library
// honours OPENBLAS_CORETYPE, read once when it loads, so a program fixes
// the choice by running itself again with the variable set.

#include <cstddef>
#include <string>

#include "absl/functional/function_ref.h"

namespace kvtier::model {

// The vector features the kernel sets need.
struct CpuVectorFeatures {
  bool avx2_fma = false;  // AVX2 and FMA3
  bool avx512 = false;    // AVX-512 F, CD, BW, DQ and VL
};

CpuVectorFeatures DetectCpuVectorFeatures();

// The OPENBLAS_CORETYPE that `cpu` runs best ("SkylakeX", "Haswell"), or
// "" for a CPU without AVX2 and FMA. (The fp32 kernels the model uses are
// the same in OpenBLAS's newer AVX-512 sets.)
std::string BlasCoreFor(const CpuVectorFeatures& cpu);

// The core to run instead of `chosen` (OpenBLAS's name for the kernels it
// picked, any case), or "" when `chosen` already uses the CPU's vectors or
// is not one of the pre-AVX2 fallbacks.
std::string BetterBlasCore(const std::string& chosen, const CpuVectorFeatures& cpu);

// Called first in main() of a program that runs the model: where
// OPENBLAS_CORETYPE is unset and OpenBLAS chose a pre-AVX2 fallback on a
// CPU with AVX2 or AVX-512, sets the variable, says so on stderr and runs
// /proc/self/exe again with the same arguments. Returns where it does not
// (nothing to change, or the exec failed, which it reports).
void UseCpuBlasKernels(const char* program, char** argv);

// Runs fn(i) for every i in [0, n) on a process-wide pool of one thread per
// core, with OpenBLAS on one thread while the loop runs (then back to its
// count): each fn(i)'s BLAS calls run on the thread that makes them. For
// prompt work, many products of a few rows each (and the softmax between
// them), one task per core ran 1.6-2x faster on two cores than OpenBLAS's
// threads, which mostly wait between such calls; decode's matrix-vector
// products run here too, because the pool's loops do not wait for a thread
// the scheduler has not run (worker/model/README.md); and each fn(i) computes
// the same bits whichever thread runs it and however many cores the host
// has. Loops are serialised process-wide. A BLAS call that another thread
// makes while a loop runs also runs on one thread (its result may then
// differ from its usual one in the last bits): the model's own calls come
// from the thread that runs the loops. fn must not call ParallelBlasFor.
// Thread-safe.
void ParallelBlasFor(size_t n, absl::FunctionRef<void(size_t)> fn);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_BLAS_KERNELS_H_
