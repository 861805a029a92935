#include "worker/cache/page_pool.h"

#include <cassert>

#include "absl/strings/str_cat.h"

namespace kvtier::worker {

absl::StatusOr<std::unique_ptr<PagePool>> PagePool::Create(Device* device,
                                                           const PageLayout& layout,
                                                           uint32_t capacity_pages) {
  if (device == nullptr) return absl::InvalidArgumentError("device is null");
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  if (capacity_pages == 0) return absl::InvalidArgumentError("pool capacity must be positive");
  absl::StatusOr<std::unique_ptr<DeviceBuffer>> buffer =
      device->Allocate(size_t{capacity_pages} * layout.PageBytes());
  if (!buffer.ok()) return buffer.status();
  return std::unique_ptr<PagePool>(new PagePool(device, *std::move(buffer), layout, capacity_pages));
}

PagePool::PagePool(Device* device, std::unique_ptr<DeviceBuffer> buffer, const PageLayout& layout,
                   uint32_t capacity)
    : device_(device),
      buffer_(std::move(buffer)),
      layout_(layout),
      page_bytes_(layout.PageBytes()),
      capacity_(capacity),
      base_(static_cast<uint8_t*>(buffer_->data())),
      used_(capacity, 0) {
  free_.reserve(capacity);
  for (int32_t s = static_cast<int32_t>(capacity) - 1; s >= 0; --s) free_.push_back(s);
}

absl::Status PagePool::Reserve(uint32_t pages) {
  if (pages > capacity_ - reserved_) {
    return absl::ResourceExhaustedError(absl::StrCat("pool cannot reserve ", pages, " pages: ",
                                                     capacity_ - reserved_, " of ", capacity_,
                                                     " unreserved"));
  }
  reserved_ += pages;
  return absl::OkStatus();
}

void PagePool::Unreserve(uint32_t pages) {
  assert(pages <= reserved_);
  reserved_ -= pages;
}

absl::StatusOr<int32_t> PagePool::Allocate() {
  if (free_.empty()) {
    return absl::ResourceExhaustedError(absl::StrCat("all ", capacity_, " pool pages in use"));
  }
  const int32_t slot = free_.back();
  free_.pop_back();
  used_[slot] = 1;
  if (in_use() > high_water_) high_water_ = in_use();
  return slot;
}

void PagePool::Free(int32_t slot) {
  assert(slot >= 0 && static_cast<uint32_t>(slot) < capacity_ && used_[slot]);
  used_[slot] = 0;
  free_.push_back(slot);
}

absl::Status PagePool::ReadSlot(int32_t slot, size_t offset, void* host_dst,
                                size_t bytes) const {
  assert(slot >= 0 && static_cast<uint32_t>(slot) < capacity_ && offset + bytes <= page_bytes_);
  return device_->CopyToHost(host_dst, SlotData(slot) + offset, bytes);
}

absl::Status PagePool::WriteSlot(int32_t slot, size_t offset, const void* host_src,
                                 size_t bytes) {
  assert(slot >= 0 && static_cast<uint32_t>(slot) < capacity_ && offset + bytes <= page_bytes_);
  return device_->CopyToDevice(SlotData(slot) + offset, host_src, bytes);
}

}  // namespace kvtier::worker
