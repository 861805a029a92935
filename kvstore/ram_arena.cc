#include "kvstore/ram_arena.h"

#include <sys/mman.h>

#include <bit>
#include <cassert>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace kvtier::store {
namespace {

constexpr uint64_t kAlignBytes = uint64_t{1} << RamArena::kMinClassShift;

}  // namespace

absl::StatusOr<std::unique_ptr<RamArena>> RamArena::Create(uint64_t capacity_bytes) {
  if (capacity_bytes == 0) return absl::InvalidArgumentError("RAM arena capacity is 0");
  const uint64_t rounded = (capacity_bytes + kAlignBytes - 1) / kAlignBytes * kAlignBytes;
  // MAP_NORESERVE: the region is touched page by page as slots are carved.
  void* base = mmap(nullptr, rounded, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map a RAM arena of ", rounded, " bytes: ", std::strerror(errno)));
  }
  return std::unique_ptr<RamArena>(new RamArena(static_cast<uint8_t*>(base), rounded));
}

RamArena::RamArena(uint8_t* base, uint64_t capacity_bytes)
    : base_(base), capacity_bytes_(capacity_bytes) {
  free_head_.fill(kNoSlot);
}

RamArena::~RamArena() { munmap(base_, capacity_bytes_); }

int RamArena::ClassOf(uint64_t bytes) {
  if (bytes == 0 || bytes > ClassBytes(kNumClasses - 1)) return -1;
  const int shift = std::bit_width(bytes - 1);  // ceil(log2(bytes)) for bytes > 1
  return shift <= kMinClassShift ? 0 : shift - kMinClassShift;
}

bool RamArena::CanAllocate(uint64_t bytes) const {
  const int c = ClassOf(bytes);
  assert(c >= 0);
  return free_head_[c] != kNoSlot || carved_bytes_ + ClassBytes(c) <= capacity_bytes_;
}

std::optional<RamArena::Slot> RamArena::Allocate(uint64_t bytes) {
  const int c = ClassOf(bytes);
  assert(c >= 0);
  const uint64_t class_bytes = ClassBytes(c);
  Slot slot{.offset = 0, .size_class = static_cast<uint8_t>(c)};
  if (free_head_[c] != kNoSlot) {
    slot.offset = free_head_[c];
    std::memcpy(&free_head_[c], base_ + slot.offset, sizeof(uint64_t));
  } else if (carved_bytes_ + class_bytes <= capacity_bytes_) {
    slot.offset = carved_bytes_;
    carved_bytes_ += class_bytes;
  } else {
    return std::nullopt;
  }
  used_bytes_ += class_bytes;
  return slot;
}

void RamArena::Free(const Slot& slot) {
  assert(slot.size_class < kNumClasses);
  assert(slot.offset + ClassBytes(slot.size_class) <= carved_bytes_);
  std::memcpy(base_ + slot.offset, &free_head_[slot.size_class], sizeof(uint64_t));
  free_head_[slot.size_class] = slot.offset;
  used_bytes_ -= ClassBytes(slot.size_class);
}

}  // namespace kvtier::store
