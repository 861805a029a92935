#include "kernels/gather_scatter.h"

#include <cstring>
#include <limits>

#include "kernels/cpu/internal.h"

namespace kvtier::kernels {
namespace {

constexpr char kWhat[] = "PageCopy";

// Pages per task: a few hundred KiB, enough to amortise a task.
constexpr size_t kPagesPerTask = 8;

absl::Status Copy(const PageCopyArgs& a, ThreadPool* pool, bool gather) {
  KVTIER_KERNELS_RETURN_IF_ERROR(a.Validate());
  if (a.n_pages == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(
      internal::CheckIds(kWhat, "page_ids", a.page_ids, a.n_pages, a.pool_pages));
  internal::ParallelChunks(pool, a.n_pages, kPagesPerTask, [&](size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      char* pooled =
          static_cast<char*>(a.pool) + static_cast<size_t>(a.page_ids[i]) * a.page_stride_bytes;
      char* staged = static_cast<char*>(a.staging) + i * a.page_bytes;
      if (gather) {
        std::memcpy(staged, pooled, a.page_bytes);
      } else {
        std::memcpy(pooled, staged, a.page_bytes);
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace

absl::Status PageCopyArgs::Validate() const {
  using internal::CheckRange;
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "page_bytes", page_bytes, 1, std::numeric_limits<uint32_t>::max()));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "page_stride_bytes", page_stride_bytes,
                                            page_bytes, std::numeric_limits<uint64_t>::max()));
  if (n_pages == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckNotNull(kWhat, "pool", pool));
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckNotNull(kWhat, "page_ids", page_ids));
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckNotNull(kWhat, "staging", staging));
  return CheckRange(kWhat, "pool_pages", pool_pages, 1, INT32_MAX);
}

absl::Status GatherPagesCpu(const PageCopyArgs& args, ThreadPool* pool) {
  return Copy(args, pool, /*gather=*/true);
}

absl::Status ScatterPagesCpu(const PageCopyArgs& args, ThreadPool* pool) {
  return Copy(args, pool, /*gather=*/false);
}

}  // namespace kvtier::kernels
