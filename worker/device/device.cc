#include "worker/device/device.h"

#include <cstring>
#include <new>
#include <string>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"

#if KVTIER_WITH_CUDA
#include "worker/device/cuda_device.h"
#endif

namespace kvtier::worker {
namespace {

class HostBuffer : public DeviceBuffer {
 public:
  HostBuffer(std::unique_ptr<uint8_t[]> data, size_t bytes)
      : data_(std::move(data)), bytes_(bytes) {}
  void* data() override { return data_.get(); }
  size_t bytes() const override { return bytes_; }

 private:
  std::unique_ptr<uint8_t[]> data_;
  size_t bytes_;
};

}  // namespace

absl::Status Device::Upload(absl::Span<const UploadRange> ranges) {
  for (const UploadRange& r : ranges) {
    absl::Status s = CopyToDevice(r.dst, r.src, r.bytes);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<DeviceBuffer>> CpuDevice::Allocate(size_t bytes) {
  std::unique_ptr<uint8_t[]> data(new (std::nothrow) uint8_t[bytes == 0 ? 1 : bytes]());
  if (data == nullptr) {
    return absl::ResourceExhaustedError(absl::StrCat("cannot allocate ", bytes, " host bytes"));
  }
  return std::unique_ptr<DeviceBuffer>(new HostBuffer(std::move(data), bytes));
}

absl::Status CpuDevice::CopyToDevice(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
  return absl::OkStatus();
}

absl::Status CpuDevice::CopyToHost(void* dst, const void* src, size_t bytes) {
  std::memcpy(dst, src, bytes);
  return absl::OkStatus();
}

absl::StatusOr<DeviceSpec> ParseDeviceSpec(std::string_view spec) {
  if (spec == "cpu") return DeviceSpec{DeviceKind::kCpu, 0};
  int ordinal = 0;
  absl::string_view rest(spec.data(), spec.size());
  const bool cuda = absl::ConsumePrefix(&rest, "cuda") &&
                    (rest.empty() || (absl::ConsumePrefix(&rest, ":") &&
                                      absl::SimpleAtoi(rest, &ordinal) && ordinal >= 0));
  if (!cuda) {
    return absl::InvalidArgumentError(
        absl::StrCat("device '", std::string(spec), "' is not cpu, cuda or cuda:N"));
  }
#if KVTIER_WITH_CUDA
  return DeviceSpec{DeviceKind::kCuda, ordinal};
#else
  return absl::FailedPreconditionError(absl::StrCat(
      "device '", std::string(spec), "' needs a build with CUDA (configure with -DKVTIER_CUDA=ON)"));
#endif
}

absl::StatusOr<std::unique_ptr<Device>> CreateDevice(std::string_view spec) {
  absl::StatusOr<DeviceSpec> parsed = ParseDeviceSpec(spec);
  if (!parsed.ok()) return parsed.status();
  if (parsed->kind == DeviceKind::kCpu) return std::unique_ptr<Device>(new CpuDevice());
#if KVTIER_WITH_CUDA
  absl::StatusOr<std::unique_ptr<CudaDevice>> device = CudaDevice::Create(parsed->ordinal);
  if (!device.ok()) return device.status();
  return std::unique_ptr<Device>(*std::move(device));
#else
  return absl::InternalError("a CUDA device spec in a build without CUDA");
#endif
}

}  // namespace kvtier::worker
