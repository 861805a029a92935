// Top-k page selection from importance scores (estimate.h layout), keeping
// the first `sink` and the last `recent` pages of every sequence.
//
// For one row (a KV head, a query head, or the sum of all rows of a
// sequence when sum_rows is set) of a sequence with n pages:
//   forced    = pages [0, min(sink, n)) and [max(0, n - recent), n)
//   selection = forced + the best (k - |forced|) other pages by score
//   Order: higher score first; equal scores go to the lower page position;
//   NaN ranks below every number. If n <= k every page is selected.
// Output per row: the selected positions (0-based within the sequence) in
// ascending order, count = min(k, n), and -1 in the unused tail.
//
// Layouts:
//   scores       as estimate.h: sequence b's block at page_indptr[b] * n_rows,
//                [n_rows][n_b]
//   selected     int32 [batch][out_rows][k], out_rows = sum_rows ? 1 : n_rows
//   counts       int32 [batch][out_rows]
// With sum_rows the row scores are added in row order (fp32) before ranking:
// ArkVale's n_groups = 1, one ranking shared by all heads of a layer.
//
// Thread-safety: the functions keep no state; concurrent calls are safe when
// their outputs do not overlap.
#ifndef KVTIER_KERNELS_TOPK_H_
#define KVTIER_KERNELS_TOPK_H_

#include <cstddef>
#include <cstdint>

#include "absl/status/status.h"
#include "kernels/thread_pool.h"

#if KVTIER_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace kvtier::kernels {

struct TopKArgs {
  const float* scores = nullptr;
  const int32_t* page_indptr = nullptr;  // [batch + 1], see estimate.h
  uint32_t batch = 0;
  uint32_t total_pages = 0;  // == page_indptr[batch]
  uint32_t n_rows = 0;       // score rows per sequence, >= 1
  bool sum_rows = false;

  uint32_t k = 0;     // >= 1
  uint32_t sink = 0;  // REQUIRES: sink + recent <= k
  uint32_t recent = 0;

  int32_t* selected = nullptr;
  int32_t* counts = nullptr;

  uint32_t out_rows() const { return sum_rows ? 1u : n_rows; }
  // Scalar fields and non-null pointers only (usable with device pointers).
  absl::Status Validate() const;
};

// Also checks page_indptr (INVALID_ARGUMENT, nothing written).
absl::Status SelectTopKCpu(const TopKArgs& args, ThreadPool* pool);

#if KVTIER_WITH_CUDA
// Device pointers; page_indptr trusted. Same output as the CPU version
// (deterministic, bit-identical selections).
absl::Status SelectTopKCuda(const TopKArgs& args, cudaStream_t stream);
#endif

}  // namespace kvtier::kernels

#endif  // KVTIER_KERNELS_TOPK_H_
