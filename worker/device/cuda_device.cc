#include "worker/device/cuda_device.h"

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
    // when the context goes.
    cudaSetDevice(ordinal_);
    cudaFree(data_);
  }
  void* data() override { return data_; }
  size_t bytes() const override { return bytes_; }

 private:
  const int ordinal_;
  void* const data_;
  const size_t bytes_;
};

}  // namespace

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
  cudaStreamSynchronize(stream_);
  cudaStreamDestroy(stream_);
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
