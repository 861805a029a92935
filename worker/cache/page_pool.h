// PagePool: a fixed number of page slots in device memory, for one layer.
//
// The pool is the budget made physical: it is allocated once, never grows,
// and a slot is either free or owned by exactly one (sequence, page). Slot s
// occupies bytes [s * page_bytes, (s + 1) * page_bytes) of base(), in the
// layout's byte arrangement, which is what the kernels' page pool expects.
//
// Reservations let the cache manager admit a sequence only when every page
// its budget allows is guaranteed a slot: Reserve() at admission, then
// Allocate() never fails for a sequence within its reservation.
//
// Not thread-safe: owned by the decode thread.
#ifndef KVTIER_WORKER_CACHE_PAGE_POOL_H_
#define KVTIER_WORKER_CACHE_PAGE_POOL_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "common/page_layout.h"
#include "worker/device/device.h"

namespace kvtier::worker {

class PagePool {
 public:
  // REQUIRES: device outlives the pool.
  static absl::StatusOr<std::unique_ptr<PagePool>> Create(Device* device, const PageLayout& layout,
                                                          uint32_t capacity_pages);

  // Reserves `pages` slots for a future owner. RESOURCE_EXHAUSTED when the
  // unreserved capacity is smaller (nothing reserved then).
  absl::Status Reserve(uint32_t pages);
  // REQUIRES: pages <= reserved().
  void Unreserve(uint32_t pages);

  // A free slot. RESOURCE_EXHAUSTED when none is free.
  absl::StatusOr<int32_t> Allocate();
  // REQUIRES: slot was returned by Allocate and not freed since.
  void Free(int32_t slot);

  // Memory of device(): host-addressable only on the CPU backend. Worker
  // code reads and writes slot bytes through ReadSlot/WriteSlot.
  uint8_t* SlotData(int32_t slot) { return base_ + size_t(slot) * page_bytes_; }
  const uint8_t* SlotData(int32_t slot) const { return base_ + size_t(slot) * page_bytes_; }
  uint8_t* base() { return base_; }
  const uint8_t* base() const { return base_; }

  // Copies `bytes` at byte `offset` of `slot` to or from host memory through
  // the device. REQUIRES: offset + bytes <= page_bytes().
  absl::Status ReadSlot(int32_t slot, size_t offset, void* host_dst, size_t bytes) const;
  absl::Status WriteSlot(int32_t slot, size_t offset, const void* host_src, size_t bytes);

  Device* device() const { return device_; }
  const PageLayout& layout() const { return layout_; }
  size_t page_bytes() const { return page_bytes_; }
  uint32_t capacity() const { return capacity_; }
  uint32_t in_use() const { return capacity_ - static_cast<uint32_t>(free_.size()); }
  uint32_t reserved() const { return reserved_; }
  // Most slots ever in use at once.
  uint32_t high_water() const { return high_water_; }

 private:
  PagePool(Device* device, std::unique_ptr<DeviceBuffer> buffer, const PageLayout& layout,
           uint32_t capacity);

  Device* const device_;
  std::unique_ptr<DeviceBuffer> buffer_;
  const PageLayout layout_;
  const size_t page_bytes_;
  const uint32_t capacity_;
  uint8_t* const base_;
  std::vector<int32_t> free_;   // LIFO: a just-freed slot is reused first
  std::vector<uint8_t> used_;   // per slot, to catch double frees
  uint32_t reserved_ = 0;
  uint32_t high_water_ = 0;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_CACHE_PAGE_POOL_H_
