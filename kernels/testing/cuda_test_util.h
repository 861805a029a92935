// Device memory and skip helpers of the CUDA tests and benchmarks.
#ifndef KVTIER_KERNELS_TESTING_CUDA_TEST_UTIL_H_
#define KVTIER_KERNELS_TESTING_CUDA_TEST_UTIL_H_

#include <cuda_runtime_api.h>

#include <cstddef>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "kernels/cuda/cuda_status.h"

namespace kvtier::kernels::testing {

// True when at least one CUDA device can be used.
inline bool HaveGpu() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Owns one device allocation. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes > 0) status_ = CudaStatus(cudaMalloc(&ptr_, bytes), "cudaMalloc");
  }
  ~DeviceBuffer() {
    if (ptr_ != nullptr) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(o.bytes_), status_(o.status_) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    std::swap(status_, o.status_);
    return *this;
  }

  const absl::Status& status() const { return status_; }
  void* get() const { return ptr_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
  absl::Status status_;
};

template <typename T>
DeviceBuffer Upload(const std::vector<T>& host) {
  DeviceBuffer d(host.size() * sizeof(T));
  if (d.status().ok() && !host.empty()) {
    cudaMemcpy(d.get(), host.data(), d.bytes(), cudaMemcpyHostToDevice);
  }
  return d;
}

template <typename T>
std::vector<T> Download(const DeviceBuffer& d, size_t count) {
  std::vector<T> host(count);
  if (count > 0) cudaMemcpy(host.data(), d.get(), count * sizeof(T), cudaMemcpyDeviceToHost);
  return host;
}

// Waits for the device and reports the first error of the queued work.
inline absl::Status Sync() { return CudaStatus(cudaDeviceSynchronize(), "cudaDeviceSynchronize"); }

}  // namespace kvtier::kernels::testing

#endif  // KVTIER_KERNELS_TESTING_CUDA_TEST_UTIL_H_
