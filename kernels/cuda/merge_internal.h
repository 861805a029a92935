// The merge of a DecodePlan's cut lists, which decode_attention.cu runs
// after its items (merge_states.cu). Not part of the kernels/ API.
#ifndef KVTIER_KERNELS_CUDA_MERGE_INTERNAL_H_
#define KVTIER_KERNELS_CUDA_MERGE_INTERNAL_H_

#include <cuda_runtime_api.h>

#include "absl/status/status.h"
#include "kernels/decode_attention.h"
#include "kernels/decode_plan.h"

namespace kvtier::kernels::cuda_internal {

// Writes out and lse of every merge group of `plan` from the partial states
// its items left in a.workspace, on `stream` after them. REQUIRES: a and
// plan checked by DecodeAttentionCuda; out and workspace 16-byte aligned.
absl::Status LaunchPlanMerge(const DecodeAttentionArgs& a, const DecodePlanView& plan,
                             cudaStream_t stream);

}  // namespace kvtier::kernels::cuda_internal

#endif  // KVTIER_KERNELS_CUDA_MERGE_INTERNAL_H_
