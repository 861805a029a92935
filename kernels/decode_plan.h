// The work list of one paged decode-attention launch (plan / run split, as
// flashinfer's BatchDecodeWithPagedKVCache plan and run).
//
// A GPU fills only when its CTAs outnumber its SMs, whatever the budget:
// batch 1 with 8 KV heads and 1/8 of an 8K context is 8 lists of 64 pages,
// 8 CTAs if each list is one. The plan cuts every (sequence, KV head) list
// into chunks of at most `chunk_entries` consecutive entries so that about
// `target_ctas` work items exist, one CTA each. A list that needs one chunk
// is written straight to the output; a list cut into several gives one
// partial state per chunk (out and LSE of its G query heads in the
// workspace) and one merge group that combines them by log-sum-exp.
//
// The plan is computed on the host from the host copy of indptr, once per
// step, and travels to the device as two arrays (items, then merges) that
// the kernel reads by CTA index. Nothing in it depends on page contents,
// so a step of fixed shape reuses its plan.
//
// Thread-safety: a plan is a value; PlanDecodeAttention keeps no state.
#ifndef KVTIER_KERNELS_DECODE_PLAN_H_
#define KVTIER_KERNELS_DECODE_PLAN_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "kernels/decode_attention.h"

namespace kvtier::kernels {

// One CTA: KV head `kv_head` of sequence `seq` over list entries
// [begin, end). `list_end` is the end of the whole list, so the item whose
// `end` equals it holds the possibly partial last page. `partial` is the
// workspace state this item writes, or -1 when it writes the output rows.
struct DecodeWorkItem {
  int32_t seq;
  int32_t kv_head;
  int32_t begin;
  int32_t end;
  int32_t list_end;
  int32_t partial;
};

// The output rows (seq, kv_head * G + j), j < G, are the merge of partial
// states first_partial .. first_partial + n_partials - 1 (n_partials >= 2).
struct DecodeMergeGroup {
  int32_t seq;
  int32_t kv_head;
  int32_t first_partial;
  int32_t n_partials;
};

struct DecodePlanOptions {
  // Work items wanted: the SMs times the CTAs one SM runs at once
  // (DecodeAttentionCudaTargetCtas on a device). >= 1.
  uint32_t target_ctas = 132 * 4;
  // No chunk is cut shorter than this many tokens (rounded up to pages):
  // a merge costs a write and a read of G * (head_dim + 1) floats.
  uint32_t min_chunk_tokens = 128;
};

struct DecodePlan {
  std::vector<DecodeWorkItem> items;
  std::vector<DecodeMergeGroup> merges;
  uint32_t n_partials = 0;     // partial states, each G rows
  uint32_t chunk_entries = 0;  // the longest chunk, in list entries

  // Workspace the run needs for the partials:
  //   out [n_partials][G][head_dim] fp32, then lse [n_partials][G] fp32.
  size_t WorkspaceBytes(uint32_t group, uint32_t head_dim) const;
  // Bytes of items then merges as the device reads them (both arrays are
  // 4-byte aligned PODs; merges start at items.size() * sizeof(item)).
  size_t DeviceBytes() const;
  // Writes items then merges to `dst` (DeviceBytes() bytes).
  void Serialize(void* dst) const;
};

// Plans a launch for `args` (its scalar fields and HOST kv.indptr; nothing
// else is read). INVALID_ARGUMENT if indptr is not a non-decreasing CSR
// from 0 to kv.total_entries or the options are out of range.
absl::StatusOr<DecodePlan> PlanDecodeAttention(const DecodeAttentionArgs& args,
                                               const DecodePlanOptions& options);

// For a workspace allocated once: WorkspaceBytes(group, head_dim) of any
// plan made with `options` whose (sequence, KV head) lists each hold at
// most INT32_MAX / page_size entries is at most this (2 * target_ctas
// partials). Longer lists are cut into items of at most that many entries
// whatever the target, so their pieces can exceed it; the plan's own
// WorkspaceBytes is exact.
size_t DecodePlanMaxWorkspaceBytes(uint32_t group, uint32_t head_dim,
                                   const DecodePlanOptions& options);

#if KVTIER_WITH_CUDA
// A plan's arrays on the device (DecodePlan::Serialize copied there; merges
// at items + n_items) and its partial count.
struct DecodePlanView {
  const DecodeWorkItem* items = nullptr;
  uint32_t n_items = 0;
  const DecodeMergeGroup* merges = nullptr;
  uint32_t n_merges = 0;
  uint32_t n_partials = 0;
};

// The view of `plan` once DecodePlan::Serialize's bytes are at
// `device_bytes` (device memory; 4-byte aligned).
inline DecodePlanView ViewOnDevice(const DecodePlan& plan, const void* device_bytes) {
  DecodePlanView view;
  view.items = static_cast<const DecodeWorkItem*>(device_bytes);
  view.n_items = static_cast<uint32_t>(plan.items.size());
  view.merges = reinterpret_cast<const DecodeMergeGroup*>(view.items + plan.items.size());
  view.n_merges = static_cast<uint32_t>(plan.merges.size());
  view.n_partials = plan.n_partials;
  return view;
}

// Runs `plan`, made by PlanDecodeAttention for `args`' indptr, on device
// pointers (indices, last_page_len and the plan trusted; args.num_splits
// ignored). REQUIRES: out and workspace 16-byte aligned; the workspace
// holds plan.WorkspaceBytes(G, head_dim) when the plan has partials.
// fp16/bf16 pages with head_dim 64/128/256 and G in {1, 2, 3, 4, 8} take
// the pipelined kernel; other shapes a generic one.
absl::Status DecodeAttentionCuda(const DecodeAttentionArgs& args, const DecodePlanView& plan,
                                 cudaStream_t stream);

// DecodePlanOptions::target_ctas for `args`' shape on the current device:
// its SMs times the CTAs of the kernel that runs the shape one SM holds.
// Queried once per device and kernel configuration, then remembered
// (thread-safe).
absl::StatusOr<uint32_t> DecodeAttentionCudaTargetCtas(const DecodeAttentionArgs& args);
#endif

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_DECODE_PLAN_H_
