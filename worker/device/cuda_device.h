// CudaDevice: the CUDA backend of Device. The page pool lives in the memory
// of one GPU; copies to and from host memory run on the device's own stream
// and return once they are complete, so callers see the same synchronous
// contract as CpuDevice.
//
// Built only when KVTIER_WITH_CUDA. CUDA runtime errors become absl::Status
// in kernels/cuda/cuda_status.h (the one conversion in kvtier).
//
// Upload (a batch of recalled pages) is the exception: it copies the pages
// into pinned staging and queues their copies on a second stream, which the
// device's stream waits for, and returns without waiting for them to land.
//
// Thread-safety: thread-safe. Every call selects the device on the calling
// thread first; the stream is shared, so concurrent copies serialise on it.
#ifndef KVTIER_WORKER_DEVICE_CUDA_DEVICE_H_
#define KVTIER_WORKER_DEVICE_CUDA_DEVICE_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>

#include "absl/status/status.h"
#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/types/span.h"
#include "worker/device/device.h"

namespace kvtier::worker {

class CudaDevice : public Device {
 public:
  // The GPU `device_ordinal` with a new non-blocking stream.
  // INVALID_ARGUMENT for a negative ordinal, UNAVAILABLE when the CUDA
  // runtime reports no usable device (no GPU or no driver),
  // FAILED_PRECONDITION when the ordinal is not below the device count.
  static absl::StatusOr<std::unique_ptr<CudaDevice>> Create(int device_ordinal);
  // Synchronizes and destroys the stream. REQUIRES: every buffer this device
  // allocated has been released (they free their memory on this device).
  ~CudaDevice() override;
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  DeviceKind kind() const override { return DeviceKind::kCuda; }
  // cudaMalloc'ed and zero-filled; RESOURCE_EXHAUSTED when GPU memory is short.
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(size_t bytes) override;
  // `dst` (CopyToDevice) or `src` (CopyToHost) is memory of this device, the
  // other side host memory (pageable or pinned).
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override;
  // Page-locked host memory (cudaHostAlloc), uninitialised; copies from and
  // to it can run asynchronously on stream(). RESOURCE_EXHAUSTED when it
  // cannot be had.
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> AllocatePinnedHost(size_t bytes);
  // Pinned staging in two halves (at least kUploadHalfBytes each, or the
  // largest range): while the copy stream reads one, the host fills the
  // other. The copy stream first waits for the work already queued on
  // stream() (a slot being rewritten may still be read there).
  absl::Status Upload(absl::Span<const UploadRange> ranges) override;
  static constexpr size_t kUploadHalfBytes = size_t{8} << 20;

  // The stream kernels over this device's memory run on.
  cudaStream_t stream() const { return stream_; }
  int ordinal() const { return ordinal_; }
  // Makes this device current on the calling thread.
  absl::Status Select() const;
  // Waits for everything queued on stream(); the status of the work.
  absl::Status Synchronize() const;

 private:
  CudaDevice(int ordinal, cudaStream_t stream) : ordinal_(ordinal), stream_(stream) {}
  absl::Status Copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                    const char* what);

  struct StagingHalf {
    std::unique_ptr<DeviceBuffer> host;  // AllocatePinnedHost
    // Recorded on the copy stream after the last copy that reads `host`.
    cudaEvent_t read = nullptr;
  };
  // Creates the copy stream and events, and grows the halves to `bytes`.
  absl::Status PrepareUploads(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(upload_mu_);
  absl::Status UploadLocked(absl::Span<const UploadRange> ranges, size_t largest)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(upload_mu_);
  // Makes half `h` free to overwrite (its last copies have read it).
  absl::Status ReuseHalf(int h) ABSL_EXCLUSIVE_LOCKS_REQUIRED(upload_mu_);
  void ReleaseUploads() ABSL_EXCLUSIVE_LOCKS_REQUIRED(upload_mu_);

  const int ordinal_;
  const cudaStream_t stream_;

  absl::Mutex upload_mu_;
  cudaStream_t copy_stream_ ABSL_GUARDED_BY(upload_mu_) = nullptr;
  // Recorded on stream_ when an upload starts; the copy stream waits for it.
  cudaEvent_t queued_ ABSL_GUARDED_BY(upload_mu_) = nullptr;
  StagingHalf halves_[2] ABSL_GUARDED_BY(upload_mu_);
  size_t half_bytes_ ABSL_GUARDED_BY(upload_mu_) = 0;
  int next_half_ ABSL_GUARDED_BY(upload_mu_) = 0;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_DEVICE_CUDA_DEVICE_H_
