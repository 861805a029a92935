#include "worker/device/cuda_device.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "kernels/cuda/cuda_status.h"

namespace kvtier::worker {
namespace {

using kernels::CudaStatus;

class CudaBuffer : public DeviceBuffer {
 public:
  CudaBuffer(int ordinal, void* data, size_t bytes)
      : ordinal_(ordinal), data_(data), bytes_(bytes) {}
  ~CudaBuffer() override {
    // A failure here leaves nothing to undo; the memory is the driver's again
    // when the context goes. Its error is consumed, or the next kernel
    // launch's check (cudaGetLastError) would report it as its own.
    cudaSetDevice(ordinal_);
    cudaFree(data_);
    cudaGetLastError();
  }
  void* data() override { return data_; }
  size_t bytes() const override { return bytes_; }

 private:
  const int ordinal_;
  void* const data_;
  const size_t bytes_;
};

class PinnedHostBuffer : public DeviceBuffer {
 public:
  PinnedHostBuffer(void* data, size_t bytes) : data_(data), bytes_(bytes) {}
  ~PinnedHostBuffer() override {
    cudaFreeHost(data_);
    cudaGetLastError();  // as ~CudaBuffer
  }
  void* data() override { return data_; }
  size_t bytes() const override { return bytes_; }

 private:
  void* const data_;
  const size_t bytes_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CudaDevice::AllocatePinnedHost(size_t bytes) {
  RETURN_IF_ERROR(Select());
  void* data = nullptr;
  const cudaError_t err = cudaHostAlloc(&data, bytes == 0 ? 1 : bytes, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    cudaGetLastError();
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot allocate ", bytes, " bytes of pinned host memory: ",
                     CudaStatus(err, "cudaHostAlloc").message()));
  }
  return std::unique_ptr<DeviceBuffer>(new PinnedHostBuffer(data, bytes));
}

absl::StatusOr<std::unique_ptr<CudaDevice>> CudaDevice::Create(int device_ordinal) {
  if (device_ordinal < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("CUDA device ordinal ", device_ordinal, " is negative"));
  }
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    // No GPU and no driver both land here; the runtime's words say which.
    // Reading the error clears it, so later runtime calls do not report it.
    cudaGetLastError();
    const std::string why = err != cudaSuccess
                                ? std::string(CudaStatus(err, "cudaGetDeviceCount").message())
                                : std::string("cudaGetDeviceCount reports 0 devices");
    return absl::UnavailableError(absl::StrCat("no usable CUDA device: ", why));
  }
  if (device_ordinal >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "CUDA device ", device_ordinal, " requested but only ", count, " present"));
  }
  RETURN_IF_ERROR(CudaStatus(cudaSetDevice(device_ordinal), "cudaSetDevice"));
  cudaStream_t stream = nullptr;
  RETURN_IF_ERROR(
      CudaStatus(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), "cudaStreamCreate"));
  return std::unique_ptr<CudaDevice>(new CudaDevice(device_ordinal, stream));
}

CudaDevice::~CudaDevice() {
  cudaSetDevice(ordinal_);
  {
    absl::MutexLock lock(&upload_mu_);
    ReleaseUploads();
  }
  cudaStreamSynchronize(stream_);
  cudaStreamDestroy(stream_);
  cudaGetLastError();  // as ~CudaBuffer
}

void CudaDevice::ReleaseUploads() {
  if (copy_stream_ != nullptr) cudaStreamSynchronize(copy_stream_);
  for (StagingHalf& h : halves_) {
    if (h.read != nullptr) cudaEventDestroy(h.read);
    h = StagingHalf();
  }
  if (queued_ != nullptr) cudaEventDestroy(queued_);
  if (copy_stream_ != nullptr) cudaStreamDestroy(copy_stream_);
  queued_ = nullptr;
  copy_stream_ = nullptr;
  half_bytes_ = 0;
}

absl::Status CudaDevice::PrepareUploads(size_t bytes) {
  // Each handle on its own: after a failed first call, the next creates
  // only what is missing.
  if (copy_stream_ == nullptr) {
    RETURN_IF_ERROR(CudaStatus(cudaStreamCreateWithFlags(&copy_stream_, cudaStreamNonBlocking),
                               "cudaStreamCreate (uploads)"));
  }
  if (queued_ == nullptr) {
    RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&queued_, cudaEventDisableTiming),
                               "cudaEventCreate"));
  }
  for (StagingHalf& h : halves_) {
    if (h.read != nullptr) continue;
    RETURN_IF_ERROR(CudaStatus(cudaEventCreateWithFlags(&h.read, cudaEventDisableTiming),
                               "cudaEventCreate"));
  }
  const size_t want = std::max(bytes, kUploadHalfBytes);
  if (half_bytes_ >= want) return absl::OkStatus();
  // Nothing may still read the old halves.
  RETURN_IF_ERROR(CudaStatus(cudaStreamSynchronize(copy_stream_), "cudaStreamSynchronize"));
  half_bytes_ = 0;
  for (StagingHalf& h : halves_) {
    h.host.reset();
    ASSIGN_OR_RETURN(h.host, AllocatePinnedHost(want));
  }
  half_bytes_ = want;
  return absl::OkStatus();
}

absl::Status CudaDevice::ReuseHalf(int h) {
  return CudaStatus(cudaEventSynchronize(halves_[h].read), "cudaEventSynchronize (staging)");
}

absl::Status CudaDevice::Upload(absl::Span<const UploadRange> ranges) {
  size_t largest = 0;
  for (const UploadRange& r : ranges) largest = std::max(largest, r.bytes);
  if (largest == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Select());
  absl::MutexLock lock(&upload_mu_);
  absl::Status s = UploadLocked(ranges, largest);
  // A copy queued before the error may still read a half whose event was
  // not recorded: let every one finish before the halves are written again.
  if (!s.ok() && copy_stream_ != nullptr) cudaStreamSynchronize(copy_stream_);
  return s;
}

absl::Status CudaDevice::UploadLocked(absl::Span<const UploadRange> ranges, size_t largest) {
  RETURN_IF_ERROR(PrepareUploads(largest));
  // Write after read: work already queued on stream_ may read the slots.
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(queued_, stream_), "cudaEventRecord"));
  RETURN_IF_ERROR(
      CudaStatus(cudaStreamWaitEvent(copy_stream_, queued_, 0), "cudaStreamWaitEvent"));
  int h = next_half_;
  RETURN_IF_ERROR(ReuseHalf(h));
  size_t used = 0;
  for (const UploadRange& r : ranges) {
    if (r.bytes == 0) continue;
    if (used + r.bytes > half_bytes_) {
      // This half is full: mark where its copies end and fill the other.
      RETURN_IF_ERROR(
          CudaStatus(cudaEventRecord(halves_[h].read, copy_stream_), "cudaEventRecord"));
      h ^= 1;
      RETURN_IF_ERROR(ReuseHalf(h));
      used = 0;
    }
    uint8_t* staged = static_cast<uint8_t*>(halves_[h].host->data()) + used;
    std::memcpy(staged, r.src, r.bytes);
    RETURN_IF_ERROR(CudaStatus(
        cudaMemcpyAsync(r.dst, staged, r.bytes, cudaMemcpyHostToDevice, copy_stream_),
        "cudaMemcpyAsync (upload)"));
    used += r.bytes;
  }
  RETURN_IF_ERROR(CudaStatus(cudaEventRecord(halves_[h].read, copy_stream_), "cudaEventRecord"));
  next_half_ = h ^ 1;
  // Everything later on stream_ sees the pages.
  return CudaStatus(cudaStreamWaitEvent(stream_, halves_[h].read, 0), "cudaStreamWaitEvent");
}

absl::Status CudaDevice::Select() const {
  return CudaStatus(cudaSetDevice(ordinal_), "cudaSetDevice");
}

absl::Status CudaDevice::Synchronize() const {
  RETURN_IF_ERROR(Select());
  return CudaStatus(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CudaDevice::Allocate(size_t bytes) {
  RETURN_IF_ERROR(Select());
  void* data = nullptr;
  // cudaMalloc(0) may return nullptr; one byte keeps data() distinct and valid.
  const size_t n = bytes == 0 ? 1 : bytes;
  RETURN_IF_ERROR(CudaStatus(cudaMalloc(&data, n), "cudaMalloc"));
  auto buffer = std::make_unique<CudaBuffer>(ordinal_, data, bytes);
  RETURN_IF_ERROR(CudaStatus(cudaMemsetAsync(data, 0, n, stream_), "cudaMemsetAsync"));
  RETURN_IF_ERROR(Synchronize());
  return std::unique_ptr<DeviceBuffer>(std::move(buffer));
}

absl::Status CudaDevice::Copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind,
                              const char* what) {
  if (bytes == 0) return absl::OkStatus();
  RETURN_IF_ERROR(Select());
  RETURN_IF_ERROR(CudaStatus(cudaMemcpyAsync(dst, src, bytes, kind, stream_), what));
  return Synchronize();
}

absl::Status CudaDevice::CopyToDevice(void* dst, const void* src, size_t bytes) {
  return Copy(dst, src, bytes, cudaMemcpyHostToDevice, "cudaMemcpyAsync to device");
}

absl::Status CudaDevice::CopyToHost(void* dst, const void* src, size_t bytes) {
  return Copy(dst, src, bytes, cudaMemcpyDeviceToHost, "cudaMemcpyAsync to host");
}

}  // namespace kvtier::worker
