#include "worker/cache/page_table.h"

#include <algorithm>
#include <cassert>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/status_macros.h"
#include "kernels/dtype.h"

namespace kvtier::worker {
namespace {

absl::Status CheckAscending(absl::Span<const int32_t> pages, uint32_t n_pages, const char* what) {
  for (size_t i = 0; i < pages.size(); ++i) {
    if (pages[i] < 0 || static_cast<uint32_t>(pages[i]) >= n_pages ||
        (i > 0 && pages[i] <= pages[i - 1])) {
      return absl::InternalError(
          absl::StrCat("plan ", what, " list is not ascending pages in [0, ", n_pages, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

LayerView PageTable::View(uint32_t layer, uint32_t page_size) const {
  LayerView view;
  view.layer = layer;
  view.n_pages = n_pages();
  view.n_tokens = n_tokens;
  view.page_size = page_size;
  view.budget_pages = budget_pages;
  view.states = states;
  view.n_digested = n_digested;
  return view;
}

absl::Status PageTable::CheckPlan(const PagePlan& plan, std::string_view policy,
                                  uint32_t n_kv_heads) const {
  RETURN_IF_ERROR(CheckAscending(plan.resident, n_pages(), "resident"));
  RETURN_IF_ERROR(CheckAscending(plan.attend, n_pages(), "attend"));
  if (plan.resident.size() > budget_pages) {
    return absl::InternalError(absl::StrFormat("policy %s planned %d resident pages over a budget of %d",
                                               std::string(policy), plan.resident.size(),
                                               budget_pages));
  }
  if (n_pages() > 0 &&
      (plan.resident.empty() || plan.resident.back() != static_cast<int32_t>(n_pages() - 1))) {
    return absl::InternalError("plan drops the sequence's last page");
  }
  if (!std::includes(plan.resident.begin(), plan.resident.end(), plan.attend.begin(),
                     plan.attend.end())) {
    return absl::InternalError("plan attends pages it does not keep resident");
  }
  if (plan.head_attend.empty()) return absl::OkStatus();
  if (plan.head_attend.size() != n_kv_heads) {
    return absl::InternalError(absl::StrCat("plan has ", plan.head_attend.size(),
                                            " per-head lists for ", n_kv_heads, " KV heads"));
  }
  for (const std::vector<int32_t>& list : plan.head_attend) {
    RETURN_IF_ERROR(CheckAscending(list, n_pages(), "per-head attend"));
    // The kernel reads the sequence's partial page as the last entry of
    // every list, so every list must end with it.
    if (list.empty() || list.back() != static_cast<int32_t>(n_pages() - 1)) {
      return absl::InternalError("a per-head attend list does not end with the last page");
    }
    if (!std::includes(plan.attend.begin(), plan.attend.end(), list.begin(), list.end())) {
      return absl::InternalError("a per-head attend list holds pages outside attend");
    }
  }
  return absl::OkStatus();
}

absl::Status PageTable::AttentionSlots(absl::Span<const int32_t> pages, uint32_t page_size,
                                       std::vector<int32_t>* out_slots,
                                       int32_t* last_page_len) const {
  out_slots->clear();
  for (int32_t p : pages) {
    if (p < 0 || static_cast<size_t>(p) >= states.size() || !IsResident(states[p])) {
      return absl::FailedPreconditionError(absl::StrCat("page ", p, " is not resident"));
    }
    out_slots->push_back(slots[p]);
  }
  *last_page_len = static_cast<int32_t>(page_size);
  if (!pages.empty() && static_cast<size_t>(pages.back()) + 1 == states.size()) {
    const uint32_t rem = n_tokens % page_size;
    *last_page_len = static_cast<int32_t>(rem == 0 ? page_size : rem);
  }
  return absl::OkStatus();
}

void PageTable::FreeSlot(PagePool& pool, int32_t page, PageState state) {
  assert(HoldsSlot(states[page]) && !HoldsSlot(state));
  pool.Free(slots[page]);
  slots[page] = -1;
  states[page] = state;
  --slots_held;
}

void PageTable::ReleaseSlots(PagePool& pool) {
  for (int32_t& slot : slots) {
    if (slot >= 0) pool.Free(slot);
    slot = -1;
  }
  slots_held = 0;
  pool.Unreserve(budget_pages);
}

absl::Status PageTable::AppendDigest(const void* page_bytes, const PageLayout& layout,
                                     const DigestFormat& format) {
  digests.resize((n_digested + 1) * format.slot_bytes());
  const int32_t staged_page = 0;
  const int32_t digest_slot = static_cast<int32_t>(n_digested);
  kernels::DigestArgs args;
  args.pool = page_bytes;
  args.page_stride_bytes = layout.PageBytes();
  args.pool_pages = 1;
  args.key_type = static_cast<kernels::ScalarType>(layout.dtype);
  args.page_size = layout.page_size;
  args.n_kv_heads = layout.n_kv_heads;
  args.head_dim = layout.head_dim;
  args.page_ids = &staged_page;
  args.n_pages = 1;
  args.kind = format.kind;
  args.digests = digests.data();
  args.digest_type = format.type;
  args.digest_slots = &digest_slot;
  args.digest_capacity = n_digested + 1;
  RETURN_IF_ERROR(kernels::ComputeDigestsCpu(args, nullptr));
  ++n_digested;
  return absl::OkStatus();
}

absl::StatusOr<const void*> PageTable::MirrorDigests(Device* device, size_t slot_bytes) {
  if (device->kind() == DeviceKind::kCpu) return digests.data();
  const size_t need = size_t{n_digested} * slot_bytes;
  if (mirror == nullptr || mirror->bytes() < need) {
    const size_t grown = std::max(need, mirror == nullptr ? 64 * slot_bytes : 2 * mirror->bytes());
    ASSIGN_OR_RETURN(mirror, device->Allocate(grown));
    n_mirrored = 0;
  }
  if (n_mirrored < n_digested) {
    auto* dst = static_cast<uint8_t*>(mirror->data()) + size_t{n_mirrored} * slot_bytes;
    RETURN_IF_ERROR(device->CopyToDevice(dst, digests.data() + size_t{n_mirrored} * slot_bytes,
                                         size_t{n_digested - n_mirrored} * slot_bytes));
    n_mirrored = n_digested;
  }
  return static_cast<const void*>(mirror->data());
}

void PageTable::OnBackupDone(int32_t page, bool ok) {
  puts[page] = 0;
  PageState& state = states[page];
  if (ok) {
    if (state == PageState::kBackingUp) state = PageState::kResident;
    if (state == PageState::kEvictedBackingUp) state = PageState::kEvicted;
  } else if (state == PageState::kEvictedBackingUp) {
    state = PageState::kLost;  // its only copy was in the failed transfer
  }
}

absl::Status PageTable::EvictTokens(PagePool& pool, absl::Span<const uint32_t> token_slots,
                                    uint32_t n_lists, size_t digest_slot_bytes) {
  const PageLayout& lay = pool.layout();
  if (n_lists != 1 && n_lists != lay.n_kv_heads) {
    return absl::InvalidArgumentError(absl::StrCat("token eviction takes one slot list or one per KV"
                                                   " head (", lay.n_kv_heads, "), not ", n_lists));
  }
  if (token_slots.size() % n_lists != 0) {
    return absl::InvalidArgumentError(absl::StrCat(token_slots.size(), " token slots do not split"
                                                   " into ", n_lists, " equal lists"));
  }
  if (IsQuantized(lay.dtype)) {
    // A moved row would leave its scales behind (per token) or land under
    // another page's (int8 keys: per channel and page).
    return absl::FailedPreconditionError(
        "token eviction moves token rows without their scales: it needs an unquantized pool");
  }
  const size_t count = token_slots.size() / n_lists;
  for (size_t l = 0; l < n_lists; ++l) {
    for (size_t i = 0; i < count; ++i) {
      const uint32_t s = token_slots[l * count + i];
      if (s >= n_tokens - i || (i > 0 && s >= token_slots[l * count + i - 1])) {
        return absl::InvalidArgumentError("token slots must be strictly descending and cached");
      }
    }
  }
  const uint32_t p = lay.page_size;
  const size_t elem = DTypeBytes(lay.dtype);
  const size_t row_bytes = size_t{lay.n_kv_heads} * lay.head_dim * elem;
  // One list moves whole token rows; a list per head moves that head's slice.
  const size_t move_bytes = row_bytes / n_lists;
  const size_t v_offset = lay.ElementsPerTensor() * elem;
  std::vector<uint8_t> kv_part(2 * move_bytes);  // the moved slice, through host memory
  for (size_t i = 0; i < count; ++i) {
    const uint32_t last = n_tokens - 1;
    for (size_t l = 0; l < n_lists; ++l) {
      const uint32_t s = token_slots[l * count + i];
      if (s == last) continue;
      const int32_t from = slots[last / p];
      const int32_t to = slots[s / p];
      const size_t src = (last % p) * row_bytes + l * move_bytes;
      const size_t dst = (s % p) * row_bytes + l * move_bytes;
      RETURN_IF_ERROR(pool.ReadSlot(from, src, kv_part.data(), move_bytes));
      RETURN_IF_ERROR(
          pool.ReadSlot(from, v_offset + src, kv_part.data() + move_bytes, move_bytes));
      RETURN_IF_ERROR(pool.WriteSlot(to, dst, kv_part.data(), move_bytes));
      RETURN_IF_ERROR(pool.WriteSlot(to, v_offset + dst, kv_part.data() + move_bytes, move_bytes));
    }
    --n_tokens;
    if (n_tokens % p == 0) {
      // The last page is empty now.
      pool.Free(slots.back());
      states.pop_back();
      slots.pop_back();
      checksums.pop_back();
      puts.pop_back();
      --slots_held;
    } else {
      states.back() = PageState::kFilling;
    }
  }
  // Digests of rewritten pages are stale; token policies do not score pages.
  const uint32_t full_pages = n_tokens / p;
  if (n_digested > full_pages) {
    n_digested = full_pages;
    digests.resize(size_t{full_pages} * digest_slot_bytes);
    n_mirrored = std::min(n_mirrored, full_pages);  // later slots will be new pages
  }
  return absl::OkStatus();
}

absl::Status PageTable::ReadTokens(const PagePool& pool, std::vector<float>* k,
                                   std::vector<float>* v) const {
  const PageLayout& lay = pool.layout();
  const auto type = static_cast<kernels::ScalarType>(lay.dtype);
  const size_t row = size_t{lay.n_kv_heads} * lay.head_dim;
  const size_t v_offset = lay.ElementsPerTensor();
  k->resize(n_tokens * row);
  if (v != nullptr) v->resize(n_tokens * row);
  // Keys only: the K tensor of each page; else the whole page.
  const size_t read_bytes =
      v != nullptr ? pool.page_bytes() : lay.ElementsPerTensor() * DTypeBytes(lay.dtype);
  std::vector<uint8_t> page_copy(read_bytes);
  const uint8_t* page = page_copy.data();
  for (uint32_t j = 0; j < n_tokens; ++j) {
    const int32_t slot = slots[j / lay.page_size];
    if (slot < 0) return absl::FailedPreconditionError("a cached page is not resident");
    if (j % lay.page_size == 0) {
      RETURN_IF_ERROR(pool.ReadSlot(slot, 0, page_copy.data(), page_copy.size()));
    }
    const size_t base = size_t{j % lay.page_size} * row;
    for (size_t e = 0; e < row; ++e) {
      (*k)[j * row + e] = kernels::LoadAsFloat(page, type, base + e);
      if (v != nullptr) (*v)[j * row + e] = kernels::LoadAsFloat(page, type, v_offset + base + e);
    }
  }
  return absl::OkStatus();
}

}  // namespace kvtier::worker
