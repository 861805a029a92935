// Layer budgets from the XKV and LU-KV allocators for kvtier-eval: a
// calibration prompt recorded as a trace through the exact dense backend,
// profiled (worker/trace/trace_profiler.h), and the profile turned into
// per-layer budgets for a total (worker/sim/simulator.h's
// AllocateLayerBudgets).
//
// Thread-safety: none.
#ifndef KVTIER_WORKER_EVAL_ALLOCATOR_PROFILES_H_
#define KVTIER_WORKER_EVAL_ALLOCATOR_PROFILES_H_

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/loader/model_loader.h"
#include "worker/trace/trace.h"

namespace kvtier::eval {

// Runs `prompt` and `decode_steps` greedy tokens through the dense backend,
// recording the last `n_prompt_queries` prompt queries and every step into
// a trace at `path`. Progress names the prompt's speed.
absl::Status RecordGreedyTrace(const model::LoadedModel& m, const std::vector<int>& prompt,
                               const std::string& path, uint32_t n_prompt_queries,
                               uint32_t decode_steps);

// INVALID_ARGUMENT naming the first of `allocators` that is not
// "uniform", "xkv" or "lukv".
absl::Status CheckAllocatorNames(const std::vector<std::string>& allocators);

// Profiles `trace` for each of `allocators` ("uniform" needs none, "xkv",
// "lukv") and writes the files `path_stem` + ".xkv.prof" / ".lukv.table".
// Returns each allocator's file ("" for uniform). INVALID_ARGUMENT for an
// unknown allocator or a trace the profiler cannot use.
absl::StatusOr<std::map<std::string, std::string>> BuildAllocatorProfiles(
    const TraceReader& trace, const std::vector<std::string>& allocators,
    const std::string& path_stem);

// Removes whichever files BuildAllocatorProfiles wrote for `path_stem`.
void RemoveAllocatorProfiles(const std::string& path_stem);

// Per-layer budgets in tokens (whole pages) from `allocator`'s `profile`
// for a total of budget_pages x n_layers pages, each layer at least
// `min_pages`.
absl::StatusOr<std::vector<int>> AllocatedLayerTokens(const std::string& allocator,
                                                      const std::string& profile,
                                                      uint32_t budget_pages, uint32_t min_pages,
                                                      uint32_t n_layers, uint32_t n_kv_heads,
                                                      uint32_t context, uint32_t page_size);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_ALLOCATOR_PROFILES_H_
