// UcxArenaMemory: the RAM arena's memory allocated through UCX.
//
// UCX 1.13's shared-memory transports (sysv, posix) reach only memory they
// allocated themselves: memory that is merely registered (ucp_mem_map
// without UCP_MEM_MAP_ALLOCATE) has no sysv/posix part in its remote key, so
// a client's one-sided writes into it fall back to UCX's emulation over
// active messages (kvstore/dataplane/DATA_PLANE.md). Allocating the arena with
// UCP_MEM_MAP_ALLOCATE lets a client on the same host write and read slots
// with a plain memcpy through the mapped segment; over other transports the
// allocation is registered memory like any other.
//
//   ASSIGN_OR_RETURN(auto ucx_arena, UcxArenaMemory::Create());
//   store_options.ram_memory = ucx_arena->Provider();
//   ASSIGN_OR_RETURN(auto store, Store::Open(store_options));
//   ASSIGN_OR_RETURN(auto plane, UcxDataPlane::Create(store.get(), options, ucx_arena));
//
// The data plane then uses this allocation's registration and packed key
// instead of registering the region again.
//
// Thread-safety: thread-safe. The context and the allocation live as long
// as any holder (this object, the store's ArenaMemory, the data plane).
#ifndef KVTIER_KVSTORE_DATAPLANE_UCX_ARENA_MEMORY_H_
#define KVTIER_KVSTORE_DATAPLANE_UCX_ARENA_MEMORY_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "kvstore/core/ram_arena.h"
#include "ucx/memory.h"
#include "ucx/context.h"

namespace kvtier::store {

class UcxArenaMemory : public std::enable_shared_from_this<UcxArenaMemory> {
 public:
  // Starts a UCX context; INVALID_ARGUMENT for bad options, the converted
  // UCX error when UCX cannot start.
  static absl::StatusOr<std::shared_ptr<UcxArenaMemory>> Create(const ucx::UcxOptions& options);

  // For StoreOptions::ram_memory: allocates the arena through UCX, once
  // (FAILED_PRECONDITION on a second call). When UCX cannot allocate it,
  // logs why and maps anonymous memory, which the data plane registers.
  ArenaMemoryProvider Provider();

  const std::shared_ptr<ucx::UcxContext>& context() const { return context_; }
  // The allocation; null before the provider ran.
  std::shared_ptr<const ucx::UcxMemory> memory() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  explicit UcxArenaMemory(std::shared_ptr<ucx::UcxContext> context)
      : context_(std::move(context)) {}
  absl::StatusOr<std::unique_ptr<ArenaMemory>> Allocate(uint64_t bytes) ABSL_LOCKS_EXCLUDED(mu_);

  const std::shared_ptr<ucx::UcxContext> context_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const ucx::UcxMemory> memory_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_DATAPLANE_UCX_ARENA_MEMORY_H_
