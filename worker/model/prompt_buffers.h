#ifndef KVTIER_WORKER_MODEL_PROMPT_BUFFERS_H_
#define KVTIER_WORKER_MODEL_PROMPT_BUFFERS_H_

// Host buffers for a prompt's K/V rows, kept from one prefill to the next.
//
// A loaded 8K-token prefix fills several hundred MiB of prompt rows at once
// (SmolLM2: 30 layers x 2 x 8K x 192 floats), and in fresh memory each 4 KiB
// page faults on its first touch: on a 2-core VM those faults cost the
// request about as much as copying the loaded pages. The pool keeps the
// buffers a finished prefill leaves, so the next prompt's rows land in
// memory that is already mapped. A kept buffer's pages are handed back with
// MADV_FREE: the kernel may reclaim them under memory pressure (a later
// write then faults a zero page in), and until then they are reused as
// they are.
//
// Thread-compatible: one owner, as the attention backend that holds it.

#include <cstddef>
#include <memory>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

namespace kvtier::model {

// std::allocator, except that a resize leaves the new elements unwritten
// instead of zeroing them: a loaded prefix's rows are written by the load
// itself (PrefixFetch), and zeroing several hundred MiB first would cost
// about as much as the copy.
template <typename T>
class UninitializedAllocator : public std::allocator<T> {
 public:
  template <typename U>
  struct rebind {
    using other = UninitializedAllocator<U>;
  };
  UninitializedAllocator() = default;
  template <typename U>
  explicit UninitializedAllocator(const UninitializedAllocator<U>& /*other*/) noexcept {}

  template <typename U>
  void construct(U* p) noexcept(std::is_nothrow_default_constructible_v<U>) {
    ::new (static_cast<void*>(p)) U;
  }
  template <typename U, typename... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

// A prompt's K or V rows of one layer: [tokens][n_kv_heads * head_dim].
using PromptRows = std::vector<float, UninitializedAllocator<float>>;

class PromptBufferPool {
 public:
  // Keeps at most `max_buffers` buffers; the smallest go first.
  explicit PromptBufferPool(size_t max_buffers) : max_buffers_(max_buffers) {}

  // Gives `buffer` a capacity of at least `floats`, its elements kept: the
  // smallest kept buffer that is large enough replaces it (and it is kept
  // in its place), or it grows as std::vector does.
  void Reserve(PromptRows& buffer, size_t floats);

  // Leaves `buffer` empty and keeps its memory for a later Reserve.
  void Release(PromptRows& buffer);

  size_t kept() const { return kept_.size(); }

 private:
  void Keep(PromptRows buffer);

  const size_t max_buffers_;
  std::vector<PromptRows> kept_;  // each empty, capacity > 0
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_PROMPT_BUFFERS_H_
