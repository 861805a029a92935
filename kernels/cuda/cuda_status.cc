#include "kernels/cuda/cuda_status.h"

#include "absl/strings/str_cat.h"

namespace kvtier::kernels {

absl::Status CudaStatus(cudaError_t err, const char* what) {
  if (err == cudaSuccess) return absl::OkStatus();
  const std::string msg =
      absl::StrCat(what, ": ", cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  switch (err) {
    case cudaErrorInvalidValue:
    case cudaErrorInvalidConfiguration:
    case cudaErrorInvalidDevicePointer:
    case cudaErrorInvalidPitchValue:
      return absl::InvalidArgumentError(msg);
    case cudaErrorMemoryAllocation:
    case cudaErrorLaunchOutOfResources:
      return absl::ResourceExhaustedError(msg);
    case cudaErrorNoDevice:
    case cudaErrorInsufficientDriver:
    case cudaErrorNoKernelImageForDevice:
      return absl::UnavailableError(msg);
    default:
      return absl::InternalError(msg);
  }
}

absl::Status LastLaunchStatus(const char* what) { return CudaStatus(cudaGetLastError(), what); }

}  // namespace kvtier::kernels
