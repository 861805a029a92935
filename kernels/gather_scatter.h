// Gather / scatter of scattered pool pages to and from one contiguous staging
// buffer, so that a batch of pages moves in one transfer.
//
//   pool page p:     bytes [p * page_stride_bytes, + page_bytes) of `pool`
//   staging entry i: bytes [i * page_bytes, + page_bytes) of `staging`
//   Gather:  staging entry i  <- pool page page_ids[i]
//   Scatter: pool page page_ids[i] <- staging entry i
// Page ids of a scatter must be distinct (else the winner is unspecified).
// `page_bytes` may be less than the stride (e.g. only the K half of pages).
//
// Thread-safety: the functions keep no state; concurrent calls are safe when
// their outputs do not overlap.
#ifndef KVTIER_KERNELS_GATHER_SCATTER_H_
#define KVTIER_KERNELS_GATHER_SCATTER_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/thread_pool.h"

#if KVTIER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvtier::kernels {

struct PageCopyArgs {
  void* pool = nullptr;
  size_t page_stride_bytes = 0;  // >= page_bytes
  uint32_t pool_pages = 0;       // every page id is < this
  size_t page_bytes = 0;         // > 0
  const int32_t* page_ids = nullptr;
  uint32_t n_pages = 0;
  void* staging = nullptr;  // n_pages * page_bytes; must not overlap the pool

  // Scalar fields and non-null pointers only (usable with device pointers).
  absl::Status Validate() const;
};

// Also check the page ids (INVALID_ARGUMENT, nothing copied).
absl::Status GatherPagesCpu(const PageCopyArgs& args, ThreadPool* pool);
absl::Status ScatterPagesCpu(const PageCopyArgs& args, ThreadPool* pool);

#if KVTIER_WITH_CUDA
// Device pointers (or mapped pinned host memory); page ids trusted.
absl::Status GatherPagesCuda(const PageCopyArgs& args, cudaStream_t stream);
absl::Status ScatterPagesCuda(const PageCopyArgs& args, cudaStream_t stream);
#endif

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_GATHER_SCATTER_H_
