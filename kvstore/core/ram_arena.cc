#include "kvstore/core/ram_arena.h"

#include <sys/mman.h>

#include <bit>
#include <cassert>
#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace kvtier::store {
namespace {

constexpr uint64_t kUnitBytes = uint64_t{1} << RamArena::kMinClassShift;

class AnonymousMemory final : public ArenaMemory {
 public:
  AnonymousMemory(uint8_t* base, uint64_t bytes) : base_(base), bytes_(bytes) {}
  ~AnonymousMemory() override { munmap(base_, bytes_); }
  uint8_t* base() const override { return base_; }
  uint64_t bytes() const override { return bytes_; }

 private:
  uint8_t* const base_;
  const uint64_t bytes_;
};

// Commits [base, base + bytes) without changing its contents. Before Linux
// 5.14 (no MADV_POPULATE_WRITE) each page is written with its own value.
absl::Status Prefault(uint8_t* base, uint64_t bytes) {
#ifdef MADV_POPULATE_WRITE
  if (madvise(base, bytes, MADV_POPULATE_WRITE) == 0) return absl::OkStatus();
  if (errno != EINVAL) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "cannot commit the RAM arena's ", bytes, " bytes: ", std::strerror(errno)));
  }
#endif
  for (uint64_t offset = 0; offset < bytes; offset += kUnitBytes) {
    volatile uint8_t* byte = base + offset;
    *byte = *byte;
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ArenaMemory>> MapAnonymousArenaMemory(uint64_t bytes) {
  // MAP_NORESERVE: memory is committed as slots are first written.
  void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED) {
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot map a RAM arena of ", bytes, " bytes: ", std::strerror(errno)));
  }
  return std::make_unique<AnonymousMemory>(static_cast<uint8_t*>(base), bytes);
}

absl::StatusOr<std::unique_ptr<RamArena>> RamArena::Create(uint64_t capacity_bytes,
                                                           const ArenaMemoryProvider& provider,
                                                           bool prefault) {
  if (capacity_bytes == 0) return absl::InvalidArgumentError("RAM arena capacity is 0");
  if (capacity_bytes > kMaxCapacityBytes) {
    return absl::InvalidArgumentError(absl::StrCat("RAM arena capacity ", capacity_bytes,
                                                   " exceeds ", kMaxCapacityBytes));
  }
  const uint64_t rounded = (capacity_bytes + kUnitBytes - 1) / kUnitBytes * kUnitBytes;
  ASSIGN_OR_RETURN(std::unique_ptr<ArenaMemory> memory,
                   provider ? provider(rounded) : MapAnonymousArenaMemory(rounded));
  if (memory == nullptr || memory->bytes() < rounded ||
      reinterpret_cast<uintptr_t>(memory->base()) % kUnitBytes != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "RAM arena memory: need ", rounded, " bytes aligned to ", kUnitBytes, ", got ",
        memory == nullptr ? 0 : memory->bytes(), " bytes at ",
        memory == nullptr ? 0 : reinterpret_cast<uintptr_t>(memory->base())));
  }
  if (prefault) {
    const absl::Time start = absl::Now();
    KVTIER_LOG(INFO) << "committing the RAM arena's " << rounded << " bytes";
    RETURN_IF_ERROR(Prefault(memory->base(), rounded));
    KVTIER_LOG(INFO) << "RAM arena committed in " << absl::ToDoubleSeconds(absl::Now() - start)
                     << " s";
  }
  auto unit_state = std::make_unique<uint8_t[]>(rounded / kUnitBytes);  // zeroed: kNotHead
  auto links = std::make_unique<Links[]>(rounded / kUnitBytes);
  return std::unique_ptr<RamArena>(
      new RamArena(std::move(memory), rounded, std::move(unit_state), std::move(links)));
}

RamArena::RamArena(std::unique_ptr<ArenaMemory> memory, uint64_t capacity_bytes,
                   std::unique_ptr<uint8_t[]> unit_state, std::unique_ptr<Links[]> links)
    : memory_(std::move(memory)),
      base_(memory_->base()),
      capacity_bytes_(capacity_bytes),
      unit_state_(std::move(unit_state)),
      links_(std::move(links)) {
  free_head_.fill(kNone);
  // Cover the region with the largest aligned blocks that fit.
  uint64_t offset = 0;
  while (offset < capacity_bytes_) {
    int c = kNumClasses - 1;
    while (offset % ClassBytes(c) != 0 || offset + ClassBytes(c) > capacity_bytes_) --c;
    PushFree(offset, c);
    offset += ClassBytes(c);
  }
}

RamArena::~RamArena() = default;

int RamArena::ClassOf(uint64_t bytes) {
  if (bytes == 0 || bytes > ClassBytes(kNumClasses - 1)) return -1;
  const int shift = std::bit_width(bytes - 1);  // ceil(log2(bytes)) for bytes > 1
  return shift <= kMinClassShift ? 0 : shift - kMinClassShift;
}

void RamArena::PushFree(uint64_t offset, int size_class) {
  Links& links = LinksAt(offset);
  const uint64_t head = free_head_[size_class];
  links.next = head == kNone ? kNoUnit : UnitOf(head);
  links.prev = kNoUnit;
  if (head != kNone) LinksAt(head).prev = UnitOf(offset);
  free_head_[size_class] = offset;
  StateAt(offset) = kFreeBit | static_cast<uint8_t>(size_class);
}

void RamArena::RemoveFree(uint64_t offset, int size_class) {
  const Links links = LinksAt(offset);
  if (links.prev != kNoUnit) {
    links_[links.prev].next = links.next;
  } else {
    free_head_[size_class] = links.next == kNoUnit ? kNone : OffsetOf(links.next);
  }
  if (links.next != kNoUnit) links_[links.next].prev = links.prev;
  LinksAt(offset) = Links();
  StateAt(offset) = kNotHead;
}

bool RamArena::CanAllocate(uint64_t bytes) const {
  const int c = ClassOf(bytes);
  assert(c >= 0);
  for (int k = c; k < kNumClasses; ++k) {
    if (free_head_[k] != kNone) return true;
  }
  return false;
}

std::optional<RamArena::Slot> RamArena::Allocate(uint64_t bytes) {
  const int c = ClassOf(bytes);
  assert(c >= 0);
  int k = c;
  while (k < kNumClasses && free_head_[k] == kNone) ++k;
  if (k == kNumClasses) return std::nullopt;
  const uint64_t offset = free_head_[k];
  RemoveFree(offset, k);
  // Split down to class c; the upper halves stay free.
  while (k > c) {
    --k;
    PushFree(offset + ClassBytes(k), k);
  }
  used_bytes_ += ClassBytes(c);
  return Slot{.offset = offset, .size_class = static_cast<uint8_t>(c)};
}

void RamArena::Free(const Slot& slot) {
  int k = slot.size_class;
  assert(k < kNumClasses);
  assert(slot.offset % ClassBytes(k) == 0 && slot.offset + ClassBytes(k) <= capacity_bytes_);
  assert(StateAt(slot.offset) == kNotHead);
  used_bytes_ -= ClassBytes(k);
  uint64_t offset = slot.offset;
  while (k + 1 < kNumClasses) {
    const uint64_t buddy = offset ^ ClassBytes(k);
    if (buddy + ClassBytes(k) > capacity_bytes_ ||
        StateAt(buddy) != (kFreeBit | static_cast<uint8_t>(k))) {
      break;
    }
    RemoveFree(buddy, k);
    offset = std::min(offset, buddy);
    ++k;
  }
  PushFree(offset, k);
}

}  // namespace kvtier::store
