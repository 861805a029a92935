#include "kvstore/dataplane/ucx_arena_memory.h"

#include <utility>

#include "common/log.h"
#include "common/status_macros.h"

namespace kvtier::store {
namespace {

// Keeps the allocation, and the context it belongs to, alive for the arena.
// Members are destroyed in reverse order: the memory before the context.
class UcxBackedMemory final : public ArenaMemory {
 public:
  UcxBackedMemory(std::shared_ptr<ucx::UcxContext> context,
                  std::shared_ptr<const ucx::UcxMemory> memory)
      : context_(std::move(context)), memory_(std::move(memory)) {}
  uint8_t* base() const override { return memory_->address(); }
  uint64_t bytes() const override { return memory_->bytes(); }

 private:
  const std::shared_ptr<ucx::UcxContext> context_;
  const std::shared_ptr<const ucx::UcxMemory> memory_;
};

}  // namespace

absl::StatusOr<std::shared_ptr<UcxArenaMemory>> UcxArenaMemory::Create(
    const ucx::UcxOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxContext> context, ucx::UcxContext::Create(options));
  return std::shared_ptr<UcxArenaMemory>(new UcxArenaMemory(std::move(context)));
}

ArenaMemoryProvider UcxArenaMemory::Provider() {
  return [self = shared_from_this()](uint64_t bytes) { return self->Allocate(bytes); };
}

std::shared_ptr<const ucx::UcxMemory> UcxArenaMemory::memory() const {
  absl::MutexLock lock(&mu_);
  return memory_;
}

absl::StatusOr<std::unique_ptr<ArenaMemory>> UcxArenaMemory::Allocate(uint64_t bytes) {
  absl::MutexLock lock(&mu_);
  if (memory_ != nullptr) {
    return absl::FailedPreconditionError("the UCX arena memory is allocated already");
  }
  absl::StatusOr<std::unique_ptr<ucx::UcxMemory>> memory =
      ucx::UcxMemory::Allocate(*context_, bytes);
  if (!memory.ok()) {
    // The store still opens; the data plane then registers this mapping,
    // and shared-memory writes into it are emulated.
    KVTIER_LOG(WARNING) << "UCX cannot allocate the RAM arena, mapping it directly: "
                        << memory.status();
    return MapAnonymousArenaMemory(bytes);
  }
  memory_ = *std::move(memory);
  return std::make_unique<UcxBackedMemory>(context_, memory_);
}

}  // namespace kvtier::store
