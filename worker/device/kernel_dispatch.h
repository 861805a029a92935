// Kernel dispatch: runs a kernel of kernels/ on the backend of a Device.
//
// The worker's argument structs are filled the same way on every backend:
// the page pool (DecodeAttentionArgs::kv.pool) and the digests
// (EstimateArgs::digests) are memory of `device`, and every other pointer
// (queries, page lists, scores, outputs) is host memory. On the CPU
// backend the CPU kernel runs on those pointers as they are. On CUDA the
// host arrays are staged into the KernelScratch's device memory, the CUDA
// twin runs on the device's stream, and the outputs are copied back before
// the call returns, so callers get host results on both backends. Results agree with the CPU kernels within the kernels'
// stated tolerances (kernels/README.md: equal up to fp32 summation order).
//
// Thread-safety: a KernelScratch is used by one thread at a time; the
// functions keep no other state.
#ifndef KVTIER_WORKER_DEVICE_KERNEL_DISPATCH_H_
#define KVTIER_WORKER_DEVICE_KERNEL_DISPATCH_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/decode_attention.h"
#include "kernels/estimate.h"
#include "kernels/thread_pool.h"
#include "worker/device/device.h"

namespace kvtier::worker {

// Device memory the CUDA path stages host arrays through, and its pinned
// host mirror: a call's inputs are packed into the mirror and cross in one
// asynchronous copy, its outputs come back in one. Both grow to the largest
// call seen and are reused; unused (never allocated) on the CPU backend.
class KernelScratch {
 public:
  // REQUIRES: device outlives the scratch.
  explicit KernelScratch(Device* device) : device_(device) {}

  Device* device() const { return device_; }
  // At least `bytes` of device memory, valid until the next call.
  // RESOURCE_EXHAUSTED when it cannot be had (the old buffer is kept).
  absl::StatusOr<uint8_t*> Reserve(size_t bytes);
  // At least `bytes` of page-locked host memory (CUDA devices only;
  // FAILED_PRECONDITION otherwise), valid until the next call.
  absl::StatusOr<uint8_t*> ReserveHost(size_t bytes);

 private:
  Device* const device_;
  std::unique_ptr<DeviceBuffer> buffer_;
  std::unique_ptr<DeviceBuffer> host_buffer_;
};

// Paged decode attention over a pool of scratch->device(). `threads` is
// used by the CPU backend only (may be null). On CUDA the call is planned
// from its page lists (kernels/decode_plan.h) so that long lists spread
// over the GPU; the result differs only in summation order.
absl::Status DecodeAttention(const kernels::DecodeAttentionArgs& args, KernelScratch* scratch,
                             kernels::ThreadPool* threads);

// Log-sum-exp merge of partial attention states (all host memory).
absl::Status MergeAttentionStates(const kernels::MergeStatesArgs& args, KernelScratch* scratch,
                                  kernels::ThreadPool* threads);

// Page scores from digests in scratch->device()'s memory
// (KvCacheManager::DeviceDigests) and host queries.
absl::Status EstimateScores(const kernels::EstimateArgs& args, KernelScratch* scratch,
                            kernels::ThreadPool* threads);

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_DEVICE_KERNEL_DISPATCH_H_
