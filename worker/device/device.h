// Device: where the KV page pool lives and how bytes get there.
//
// The cache manager allocates its pools and moves page bytes only through
// this interface, so the same runtime runs on the CPU backend (pool in host
// memory: the reference and the CI path) and on CUDA (cuda_device.h: pool in
// GPU memory, copies on a stream). Kernels are chosen by kind()
// (kernel_dispatch.h).
#ifndef KVTIER_WORKER_DEVICE_DEVICE_H_
#define KVTIER_WORKER_DEVICE_DEVICE_H_

#include <cstddef>
#include <memory>
#include <string_view>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier::worker {

enum class DeviceKind { kCpu, kCuda };

// Memory owned by a device; released by the destructor.
class DeviceBuffer {
 public:
  virtual ~DeviceBuffer() = default;
  virtual void* data() = 0;
  virtual size_t bytes() const = 0;
};

// One range of Device::Upload: `bytes` host bytes at `src` to device
// memory at `dst`.
struct UploadRange {
  void* dst = nullptr;
  const void* src = nullptr;
  size_t bytes = 0;
};

// Thread-safe.
class Device {
 public:
  virtual ~Device() = default;
  virtual DeviceKind kind() const = 0;
  // Zero-filled memory. RESOURCE_EXHAUSTED when it cannot be had.
  virtual absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(size_t bytes) = 0;
  // Synchronous copies between host memory and this device's memory.
  virtual absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) = 0;
  virtual absl::Status CopyToHost(void* dst, const void* src, size_t bytes) = 0;
  // Copies every range's host bytes into this device's memory, for a batch
  // of pages (recalls). When it returns the host ranges may be reused, and
  // every later kernel and copy of this device sees the new bytes; it need
  // not wait for them to land (CudaDevice: pinned staging and a copy
  // stream that the device's stream waits for). On error the destination
  // bytes are unspecified. This default copies range by range with
  // CopyToDevice.
  virtual absl::Status Upload(absl::Span<const UploadRange> ranges);
};

// The CPU backend: "device" memory is host memory.
class CpuDevice : public Device {
 public:
  DeviceKind kind() const override { return DeviceKind::kCpu; }
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> Allocate(size_t bytes) override;
  absl::Status CopyToDevice(void* dst, const void* src, size_t bytes) override;
  absl::Status CopyToHost(void* dst, const void* src, size_t bytes) override;
};

struct DeviceSpec {
  DeviceKind kind = DeviceKind::kCpu;
  int ordinal = 0;  // CUDA's device number
};
// "cpu", "cuda" (ordinal 0) or "cuda:N"; INVALID_ARGUMENT for another
// spec, and for CUDA FAILED_PRECONDITION in a build without CUDA
// (KVTIER_WITH_CUDA off).
absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view spec);

// The device named by `spec` (ParseDeviceSpec's errors; for CUDA then
// CudaDevice::Create's: UNAVAILABLE when there is no usable GPU).
absl::StatusOr<std::unique_ptr<Device>> CreateDevice(std::string_view spec);

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_DEVICE_DEVICE_H_
