// RamArena: the host-RAM tier's memory, one contiguous region mapped once.
//
// The region is mapped at construction and never grows or moves, so a data
// plane can register [base(), base() + capacity_bytes()) once. Slots come in
// slab classes of power-of-two sizes from 4 KiB to 64 MiB; a page of n bytes
// takes a slot of the smallest class >= n. Slots are carved from the region
// on first need (a bump pointer) and, once freed, kept on their class's free
// list, threaded through the free slots themselves: Allocate and Free are
// O(1) and never call malloc. A carved slot stays in its class (KV pages of
// one model have one size, so classes do not need rebalancing).
//
// Thread-safety: not thread-safe; the owning store serializes every call.
// Reading and writing the bytes of an allocated slot needs no lock.
#ifndef KVTIER_KVSTORE_RAM_ARENA_H_
#define KVTIER_KVSTORE_RAM_ARENA_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier::store {

class RamArena {
 public:
  static constexpr int kMinClassShift = 12;  // 4 KiB
  static constexpr int kMaxClassShift = 26;  // 64 MiB, PageLayout::kMaxPageBytes
  static constexpr int kNumClasses = kMaxClassShift - kMinClassShift + 1;

  // One allocated slot. `offset` is from base().
  struct Slot {
    uint64_t offset = 0;
    uint8_t size_class = 0;
  };

  // Maps `capacity_bytes` (rounded up to 4 KiB) of anonymous memory.
  // INVALID_ARGUMENT for 0; RESOURCE_EXHAUSTED when the mapping fails.
  static absl::StatusOr<std::unique_ptr<RamArena>> Create(uint64_t capacity_bytes);
  ~RamArena();
  RamArena(const RamArena&) = delete;
  RamArena& operator=(const RamArena&) = delete;

  // The size class of an n-byte page, or -1 when n is 0 or above 64 MiB.
  static int ClassOf(uint64_t bytes);
  static uint64_t ClassBytes(int size_class) { return uint64_t{1} << (kMinClassShift + size_class); }

  // A slot for an n-byte page, or nullopt when neither the class's free list
  // nor the uncarved rest of the region has one. REQUIRES: ClassOf(n) >= 0.
  std::optional<Slot> Allocate(uint64_t bytes);
  // REQUIRES: `slot` came from Allocate and was not freed since.
  void Free(const Slot& slot);
  // Whether an n-byte page could be allocated right now.
  bool CanAllocate(uint64_t bytes) const;

  // The first `bytes` bytes of a slot. REQUIRES: bytes <= ClassBytes(class).
  absl::Span<uint8_t> Bytes(const Slot& slot, uint64_t bytes) const {
    return absl::Span<uint8_t>(base_ + slot.offset, bytes);
  }

  uint8_t* base() const { return base_; }
  uint64_t capacity_bytes() const { return capacity_bytes_; }
  // Bytes of allocated slots (slab bytes, not page bytes).
  uint64_t used_bytes() const { return used_bytes_; }
  // Bytes carved into slots so far (allocated or on a free list).
  uint64_t carved_bytes() const { return carved_bytes_; }

 private:
  static constexpr uint64_t kNoSlot = ~uint64_t{0};

  RamArena(uint8_t* base, uint64_t capacity_bytes);

  // Const after construction.
  uint8_t* const base_;
  const uint64_t capacity_bytes_;

  uint64_t carved_bytes_ = 0;
  uint64_t used_bytes_ = 0;
  // Head offset of each class's free list; each free slot's first 8 bytes
  // hold the next offset (kNoSlot ends the list).
  std::array<uint64_t, kNumClasses> free_head_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_RAM_ARENA_H_
