#include "kernels/cuda/cuda_status.h"
#include "kernels/gather_scatter.h"

namespace kvtier::kernels {
namespace {

constexpr int kThreads = 256;

// One block per page. Copies 16-byte words when every address and size is
// 16-byte aligned (the usual case: page bytes are multiples of 16), bytes
// otherwise.
template <typename Word>
__global__ void CopyKernel(PageCopyArgs a, bool gather) {
  const size_t i = blockIdx.x;
  char* pooled = static_cast<char*>(a.pool) + size_t(a.page_ids[i]) * a.page_stride_bytes;
  char* staged = static_cast<char*>(a.staging) + i * a.page_bytes;
  const Word* from = reinterpret_cast<const Word*>(gather ? pooled : staged);
  Word* to = reinterpret_cast<Word*>(gather ? staged : pooled);
  const size_t words = a.page_bytes / sizeof(Word);
  for (size_t w = threadIdx.x; w < words; w += blockDim.x) to[w] = from[w];
}

absl::Status Launch(const PageCopyArgs& a, cudaStream_t stream, bool gather) {
  absl::Status st = a.Validate();
  if (!st.ok() || a.n_pages == 0) return st;
  const bool aligned = reinterpret_cast<uintptr_t>(a.pool) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(a.staging) % 16 == 0 &&
                       a.page_stride_bytes % 16 == 0 && a.page_bytes % 16 == 0;
  if (aligned) {
    CopyKernel<uint4><<<a.n_pages, kThreads, 0, stream>>>(a, gather);
  } else {
    CopyKernel<uint8_t><<<a.n_pages, kThreads, 0, stream>>>(a, gather);
  }
  return LastLaunchStatus(gather ? "GatherPagesCuda" : "ScatterPagesCuda");
}

}  // namespace

absl::Status GatherPagesCuda(const PageCopyArgs& a, cudaStream_t stream) {
  return Launch(a, stream, /*gather=*/true);
}

absl::Status ScatterPagesCuda(const PageCopyArgs& a, cudaStream_t stream) {
  return Launch(a, stream, /*gather=*/false);
}

}  // namespace kvtier::kernels
