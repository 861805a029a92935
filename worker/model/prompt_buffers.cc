#include "worker/model/prompt_buffers.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <utility>

namespace kvtier::model {
namespace {

// The whole pages inside the buffer's memory go back to the kernel lazily.
void FreeLazily(PromptRows& buffer) {
  static const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  const auto at = reinterpret_cast<uintptr_t>(buffer.data());
  const uintptr_t begin = (at + page - 1) & ~(page - 1);
  const uintptr_t end = (at + buffer.capacity() * sizeof(float)) & ~(page - 1);
  // Only advice: where the kernel declines, the pages stay as they are.
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_FREE);
}

}  // namespace

void PromptBufferPool::Reserve(PromptRows& buffer, size_t floats) {
  if (buffer.capacity() >= floats) return;
  auto best = kept_.end();
  for (auto it = kept_.begin(); it != kept_.end(); ++it) {
    if (it->capacity() >= floats && (best == kept_.end() || it->capacity() < best->capacity())) {
      best = it;
    }
  }
  if (best == kept_.end()) {
    buffer.reserve(floats);
    return;
  }
  PromptRows bigger = std::move(*best);
  kept_.erase(best);
  bigger.assign(buffer.begin(), buffer.end());
  std::swap(buffer, bigger);
  bigger.clear();
  if (bigger.capacity() > 0) Keep(std::move(bigger));
}

void PromptBufferPool::Release(PromptRows& buffer) {
  PromptRows kept = std::move(buffer);
  buffer = {};
  kept.clear();
  if (kept.capacity() > 0) Keep(std::move(kept));
}

void PromptBufferPool::Keep(PromptRows buffer) {
  if (max_buffers_ == 0) return;
  FreeLazily(buffer);
  kept_.push_back(std::move(buffer));
  if (kept_.size() > max_buffers_) {
    kept_.erase(std::min_element(kept_.begin(), kept_.end(), [](const auto& a, const auto& b) {
      return a.capacity() < b.capacity();
    }));
  }
}

}  // namespace kvtier::model
