// RamArena: the host-RAM tier's memory, one contiguous region mapped once.
//
// The region is obtained once at construction and never grows or moves, so
// a data plane can register [base(), base() + capacity_bytes()) once. By
// default it is anonymous memory; a data plane may supply memory its
// transports can reach one-sidedly (ArenaMemory, kvstore/dataplane/DATA_PLANE.md). Slots come in
// slab classes of power-of-two sizes from 4 KiB to 64 MiB; a page of n bytes
// takes a slot of the smallest class >= n. Slots are managed as a buddy
// system: a free slot of class c+1 splits into two of class c, and a freed
// slot merges with its free buddy, so memory freed by one page size serves
// any other (several models' layouts can share one arena). Allocate and
// Free take at most kNumClasses steps and never call malloc: the free lists
// and each 4 KiB unit's state live in side tables allocated once at Create
// (9 bytes per unit, 0.2% of the arena), never in the arena itself, whose
// bytes clients of the data plane may write at any time: nothing they write
// can corrupt the allocator.
//
// Thread-safety: not thread-safe; the owning store serializes every call.
// Reading and writing the bytes of an allocated slot needs no lock.
#ifndef KVTIER_KVSTORE_CORE_RAM_ARENA_H_
#define KVTIER_KVSTORE_CORE_RAM_ARENA_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier::store {

// The memory a RamArena lives in; released when destroyed.
class ArenaMemory {
 public:
  virtual ~ArenaMemory() = default;
  virtual uint8_t* base() const = 0;
  virtual uint64_t bytes() const = 0;
};

// Supplies at least `bytes` bytes (a multiple of 4 KiB), 4 KiB aligned.
using ArenaMemoryProvider =
    std::function<absl::StatusOr<std::unique_ptr<ArenaMemory>>(uint64_t bytes)>;

// Maps `bytes` of anonymous memory, committed as it is first written.
// RESOURCE_EXHAUSTED when the mapping fails.
absl::StatusOr<std::unique_ptr<ArenaMemory>> MapAnonymousArenaMemory(uint64_t bytes);

class RamArena {
 public:
  static constexpr int kMinClassShift = 12;  // 4 KiB
  static constexpr int kMaxClassShift = 26;  // 64 MiB, PageLayout::kMaxPageBytes
  static constexpr int kNumClasses = kMaxClassShift - kMinClassShift + 1;
  // Largest arena: units are indexed by 32 bits.
  static constexpr uint64_t kMaxCapacityBytes = (uint64_t{1} << 32) << kMinClassShift;

  // One allocated slot. `offset` is from base() and a multiple of the
  // slot's size.
  struct Slot {
    uint64_t offset = 0;
    uint8_t size_class = 0;
  };

  // An arena of `capacity_bytes` (rounded up to 4 KiB) in memory from
  // `provider` (anonymous memory when empty). `prefault`: commits every
  // page now (MADV_POPULATE_WRITE), so that no slot's first write pays a
  // page fault. INVALID_ARGUMENT for 0, more than kMaxCapacityBytes, or
  // memory that is smaller or misaligned; RESOURCE_EXHAUSTED when the memory cannot be committed; the
  // provider's error otherwise.
  static absl::StatusOr<std::unique_ptr<RamArena>> Create(
      uint64_t capacity_bytes, const ArenaMemoryProvider& provider = nullptr,
      bool prefault = false);
  ~RamArena();
  RamArena(const RamArena&) = delete;
  RamArena& operator=(const RamArena&) = delete;

  // The size class of an n-byte page, or -1 when n is 0 or above 64 MiB.
  static int ClassOf(uint64_t bytes);
  static uint64_t ClassBytes(int size_class) { return uint64_t{1} << (kMinClassShift + size_class); }

  // A slot for an n-byte page, or nullopt when no free slot of its class or
  // larger exists. REQUIRES: ClassOf(n) >= 0.
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

 private:
  static constexpr uint64_t kNone = ~uint64_t{0};
  static constexpr uint32_t kNoUnit = ~uint32_t{0};
  // Side-table byte of a free block's first unit: kFreeBit | class.
  static constexpr uint8_t kFreeBit = 0x80;
  static constexpr uint8_t kNotHead = 0;  // allocated heads and inner units

  // Doubly linked free-list links of a free block, by its first unit.
  struct Links {
    uint32_t next = kNoUnit;
    uint32_t prev = kNoUnit;
  };

  RamArena(std::unique_ptr<ArenaMemory> memory, uint64_t capacity_bytes,
           std::unique_ptr<uint8_t[]> unit_state, std::unique_ptr<Links[]> links);

  static uint32_t UnitOf(uint64_t offset) { return static_cast<uint32_t>(offset >> kMinClassShift); }
  static uint64_t OffsetOf(uint32_t unit) { return uint64_t{unit} << kMinClassShift; }
  Links& LinksAt(uint64_t offset) const { return links_[UnitOf(offset)]; }
  uint8_t& StateAt(uint64_t offset) const { return unit_state_[UnitOf(offset)]; }
  void PushFree(uint64_t offset, int size_class);
  void RemoveFree(uint64_t offset, int size_class);

  // Const after construction.
  const std::unique_ptr<ArenaMemory> memory_;
  uint8_t* const base_;
  const uint64_t capacity_bytes_;
  const std::unique_ptr<uint8_t[]> unit_state_;
  const std::unique_ptr<Links[]> links_;

  uint64_t used_bytes_ = 0;
  std::array<uint64_t, kNumClasses> free_head_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_RAM_ARENA_H_
