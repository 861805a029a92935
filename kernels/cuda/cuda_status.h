// The one conversion of CUDA runtime errors into absl::Status in kvtier.
#ifndef KVTIER_KERNELS_CUDA_CUDA_STATUS_H_
#define KVTIER_KERNELS_CUDA_CUDA_STATUS_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"

namespace kvtier::kernels {

// OK for cudaSuccess. Otherwise INVALID_ARGUMENT for launch-configuration
// and value errors, RESOURCE_EXHAUSTED for allocation failures, UNAVAILABLE
// when no usable device exists, INTERNAL for the rest; the message names
// `what` and the CUDA error.
absl::Status CudaStatus(cudaError_t err, const char* what);

// The status of the most recent launch on this thread (cudaGetLastError).
absl::Status LastLaunchStatus(const char* what);

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_CUDA_CUDA_STATUS_H_
