// KvCacheManager's token-level operations, used by the token policies
// (H2O, TOVA, ARKV) that keep single tokens rather than whole pages.
#include <cstdint>
#include <vector>

#include "common/status_macros.h"
#include "kernels/dtype.h"
#include "worker/kv_cache_manager.h"
#include "worker/kv_cache_manager_internal.h"

namespace kvtier::worker {

absl::Status KvCacheManager::EvictTokens(uint64_t seq_id, uint32_t layer,
                                         absl::Span<const uint32_t> slots) {
  ASSIGN_OR_RETURN(Sequence * seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  if (policy_->offloads()) {
    return absl::FailedPreconditionError("token eviction would rewrite backed-up pages");
  }
  LayerTable& t = seq->layers[layer];
  for (size_t i = 0; i < slots.size(); ++i) {
    if (slots[i] >= t.n_tokens || (i > 0 && slots[i] >= slots[i - 1])) {
      return absl::InvalidArgumentError("token slots must be strictly descending and cached");
    }
  }
  const PageLayout& lay = options_.layout;
  const uint32_t p = lay.page_size;
  const size_t row_bytes = size_t{lay.n_kv_heads} * lay.head_dim * DTypeBytes(lay.dtype);
  const size_t v_offset = lay.ElementsPerTensor() * DTypeBytes(lay.dtype);
  PagePool& pool = *pools_[layer];
  std::vector<uint8_t> kv_row(2 * row_bytes);  // the moved token, through host memory
  for (uint32_t s : slots) {
    const uint32_t last = t.n_tokens - 1;
    if (s != last) {
      const int32_t from = t.slots[last / p];
      const int32_t to = t.slots[s / p];
      const size_t src = (last % p) * row_bytes;
      const size_t dst = (s % p) * row_bytes;
      RETURN_IF_ERROR(pool.ReadSlot(from, src, kv_row.data(), row_bytes));
      RETURN_IF_ERROR(pool.ReadSlot(from, v_offset + src, kv_row.data() + row_bytes, row_bytes));
      RETURN_IF_ERROR(pool.WriteSlot(to, dst, kv_row.data(), row_bytes));
      RETURN_IF_ERROR(pool.WriteSlot(to, v_offset + dst, kv_row.data() + row_bytes, row_bytes));
    }
    --t.n_tokens;
    if (t.n_tokens % p == 0) {
      // The last page is empty now.
      pool.Free(t.slots.back());
      t.states.pop_back();
      t.slots.pop_back();
      t.checksums.pop_back();
      t.puts.pop_back();
      --t.slots_held;
    } else {
      t.states.back() = PageState::kFilling;
    }
  }
  // Digests of rewritten pages are stale; token policies do not score pages.
  const uint32_t full_pages = t.n_tokens / p;
  if (t.n_digested > full_pages) {
    t.n_digested = full_pages;
    t.digests.resize(size_t{full_pages} * digest_slot_floats_);
  }
  return absl::OkStatus();
}

absl::Status KvCacheManager::ReadTokens(uint64_t seq_id, uint32_t layer, std::vector<float>* k,
                                        std::vector<float>* v) const {
  ASSIGN_OR_RETURN(const Sequence* seq, Find(seq_id));
  if (layer >= options_.n_layers) return absl::InvalidArgumentError("layer out of range");
  const LayerTable& t = seq->layers[layer];
  const PageLayout& lay = options_.layout;
  const auto type = static_cast<kernels::ScalarType>(lay.dtype);
  const size_t row = size_t{lay.n_kv_heads} * lay.head_dim;
  const size_t v_offset = lay.ElementsPerTensor();
  k->resize(t.n_tokens * row);
  v->resize(t.n_tokens * row);
  std::vector<uint8_t> page_copy(pools_[layer]->page_bytes());
  const uint8_t* page = page_copy.data();
  for (uint32_t j = 0; j < t.n_tokens; ++j) {
    const int32_t slot = t.slots[j / lay.page_size];
    if (slot < 0) return absl::FailedPreconditionError("a cached page is not resident");
    if (j % lay.page_size == 0) {
      RETURN_IF_ERROR(pools_[layer]->ReadSlot(slot, 0, page_copy.data(), page_copy.size()));
    }
    const size_t base = size_t{j % lay.page_size} * row;
    for (size_t e = 0; e < row; ++e) {
      (*k)[j * row + e] = kernels::LoadAsFloat(page, type, base + e);
      (*v)[j * row + e] = kernels::LoadAsFloat(page, type, v_offset + base + e);
    }
  }
  return absl::OkStatus();
}

}  // namespace kvtier::worker
