#include "worker/device.h"

#include <cstring>
#include <new>

#include "absl/strings/str_cat.h"

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

}  // namespace kvtier::worker
