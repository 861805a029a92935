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
#include <vector>

namespace kvtier::model {

class PromptBufferPool {
 public:
  // Keeps at most `max_buffers` buffers; the smallest go first.
  explicit PromptBufferPool(size_t max_buffers) : max_buffers_(max_buffers) {}

  // Gives `buffer` a capacity of at least `floats`, its elements kept: the
  // smallest kept buffer that is large enough replaces it (and it is kept
  // in its place), or it grows as std::vector does.
  void Reserve(std::vector<float>& buffer, size_t floats);

  // Leaves `buffer` empty and keeps its memory for a later Reserve.
  void Release(std::vector<float>& buffer);

  size_t kept() const { return kept_.size(); }

 private:
  void Keep(std::vector<float> buffer);

  const size_t max_buffers_;
  std::vector<std::vector<float>> kept_;  // each empty, capacity > 0
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_PROMPT_BUFFERS_H_
