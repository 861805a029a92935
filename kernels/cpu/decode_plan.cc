#include "kernels/decode_plan.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/cpu/internal.h"

namespace kvtier::kernels {
namespace {

constexpr char kWhat[] = "PlanDecodeAttention";

int64_t CeilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

size_t DecodePlan::WorkspaceBytes(uint32_t group, uint32_t head_dim) const {
  return size_t{n_partials} * group * (size_t{head_dim} + 1) * sizeof(float);
}

size_t DecodePlan::DeviceBytes() const {
  return items.size() * sizeof(DecodeWorkItem) + merges.size() * sizeof(DecodeMergeGroup);
}

void DecodePlan::Serialize(void* dst) const {
  auto* bytes = static_cast<unsigned char*>(dst);
  if (!items.empty()) std::memcpy(bytes, items.data(), items.size() * sizeof(DecodeWorkItem));
  bytes += items.size() * sizeof(DecodeWorkItem);
  if (!merges.empty()) {
    std::memcpy(bytes, merges.data(), merges.size() * sizeof(DecodeMergeGroup));
  }
}

absl::StatusOr<DecodePlan> PlanDecodeAttention(const DecodeAttentionArgs& args,
                                               const DecodePlanOptions& options) {
  DecodeAttentionArgs shape = args;  // the plan replaces the CPU's splits
  shape.num_splits = 1;
  shape.workspace = nullptr;
  KVTIER_KERNELS_RETURN_IF_ERROR(shape.Validate());
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckRange(kWhat, "options.target_ctas",
                                                      options.target_ctas, 1, 1u << 24));
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckRange(
      kWhat, "options.min_chunk_tokens", options.min_chunk_tokens, 1, 1u << 24));
  const PagedKv& kv = args.kv;
  const uint32_t n_lists = kv.n_lists();
  const size_t n_rows = size_t{args.batch} * n_lists;
  DecodePlan plan;
  if (args.batch == 0) return plan;
  if (kv.indptr[0] != 0 || kv.indptr[n_rows] != static_cast<int32_t>(kv.total_entries)) {
    return absl::InvalidArgumentError(
        absl::StrCat(kWhat, ": indptr must run from 0 to kv.total_entries"));
  }
  // Entries every (sequence, KV head) CTA reads: a shared list is read once
  // per KV head.
  int64_t units = 0;
  for (size_t r = 0; r < n_rows; ++r) {
    if (kv.indptr[r + 1] < kv.indptr[r]) {
      return absl::InvalidArgumentError(absl::StrCat(kWhat, ": indptr decreases at ", r));
    }
    units += int64_t{kv.indptr[r + 1] - kv.indptr[r]} * (kv.per_head_lists ? 1 : kv.n_kv_heads);
  }
  const int64_t min_entries = CeilDiv(options.min_chunk_tokens, kv.page_size);
  // An item stays under 2^31 tokens, so the kernels count its tokens in 32 bits.
  const int64_t max_entries = std::max<int64_t>(1, INT32_MAX / kv.page_size);
  const int64_t chunk = std::min(
      max_entries, std::max<int64_t>({1, min_entries, CeilDiv(units, options.target_ctas)}));
  plan.chunk_entries = static_cast<uint32_t>(std::min<int64_t>(chunk, INT32_MAX));

  for (uint32_t b = 0; b < args.batch; ++b) {
    for (uint32_t g = 0; g < kv.n_kv_heads; ++g) {
      const size_t list = size_t{b} * n_lists + (kv.per_head_lists ? g : 0);
      const int32_t begin = kv.indptr[list], end = kv.indptr[list + 1];
      const int64_t pieces = std::max<int64_t>(1, CeilDiv(end - begin, chunk));
      const int32_t seq = static_cast<int32_t>(b), head = static_cast<int32_t>(g);
      if (pieces == 1) {
        plan.items.push_back({seq, head, begin, end, end, -1});
        continue;
      }
      const int32_t first = static_cast<int32_t>(plan.n_partials);
      // Equal pieces (within one entry), so no CTA waits on a long tail.
      const int64_t len = end - begin;
      for (int64_t p = 0; p < pieces; ++p) {
        const int32_t lo = begin + static_cast<int32_t>(len * p / pieces);
        const int32_t hi = begin + static_cast<int32_t>(len * (p + 1) / pieces);
        plan.items.push_back({seq, head, lo, hi, end, static_cast<int32_t>(plan.n_partials++)});
      }
      plan.merges.push_back({seq, head, first, static_cast<int32_t>(pieces)});
    }
  }
  return plan;
}

size_t DecodePlanMaxWorkspaceBytes(uint32_t group, uint32_t head_dim,
                                   const DecodePlanOptions& options) {
  // A list cut into p >= 2 pieces is longer than (p - 1) chunks, so the
  // pieces of all cut lists number at most 2 * units / chunk <= 2 * target,
  // and never more than the lists' entries allow.
  DecodePlan bound;
  bound.n_partials = 2 * options.target_ctas;
  return bound.WorkspaceBytes(group, head_dim);
}

}  // namespace kvtier::kernels
