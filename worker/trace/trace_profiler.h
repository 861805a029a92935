// Profiling runs: compute the allocators' profiles (profile.h) from a
// decode trace (trace.h). One trace gives one profile sample; concatenate
// the samples of several traces to profile a calibration set.
//
// XKV (ALGORITHMS.md §5): per layer and query head, SnapKV scores of the
// prefix [0, P - window): attention of the last `window` prompt queries
// (causal, softmax over keys 0..their position, scale 1/sqrt(d)) summed over
// those queries, then avg-pooled (stride 1, zero padding kernel/2, divided
// by the kernel as PyTorch's count_include_pad does). [interp] With GQA the
// scores are averaged over each KV head's group (pool_gqa, default on),
// since one KV head keeps one token set; each head's scores are sorted and
// summed over heads rank by rank into the layer's increments.
//
// LU-KV (ALGORITHMS.md §6): per (layer, KV head), over the evictable prompt
// tokens [n_sink, P - window):
//   scorer  — SnapKV as above with this window and kernel, group-averaged;
//   oracle  — max over the trace's decode steps and over the head's group of
//             attention probability x ||v_j|| / mean ||v|| (softmax over the
//             whole cache at that step: prompt plus decode tokens so far).
//             Traces carry no W_O, so ||v_j|| stands in for ||W_O v_j||;
//             the mean runs over the layer's prompt tokens and KV heads.
//   curve   — tokens in ascending scorer order (ties: earlier position
//             first) and C[m] = sum of the first m oracle utilities; the
//             sinks and window are the curve's protected tokens.
//
// Both read the trace record by record; memory is one layer's prompt.
// Thread-safety: pure functions of the trace (TraceReader is thread-safe),
// so several profiles may be computed concurrently.
#ifndef KVTIER_WORKER_TRACE_TRACE_PROFILER_H_
#define KVTIER_WORKER_TRACE_TRACE_PROFILER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "worker/budget/profile.h"
#include "worker/trace/trace.h"

namespace kvtier {

struct XkvProfilingOptions {
  uint32_t window = 8;  // >= 1, <= the trace's prompt queries, < prompt_len
  uint32_t kernel = 7;  // odd, >= 1
  bool pool_gqa = true;
};

struct LukvProfilingOptions {
  uint32_t n_sink = 4;   // protected leading tokens
  uint32_t window = 32;  // SnapKV scorer window; also protected (trailing)
  uint32_t kernel = 5;   // odd, >= 1: the SnapKV reference default
};

// INVALID_ARGUMENT when the options do not fit the trace (too few prompt
// queries, no decode steps for LU-KV, nothing evictable); errors of the
// trace reader (DATA_LOSS, ...) pass through.
absl::StatusOr<XkvProfile> ProfileXkv(const TraceReader& trace,
                                      const XkvProfilingOptions& options = {});
absl::StatusOr<LukvProfile> ProfileLukv(
    const TraceReader& trace, const LukvProfilingOptions& options = {});

}  // namespace kvtier

#endif  // KVTIER_WORKER_TRACE_TRACE_PROFILER_H_
