#include "kernels/estimate.h"

#include <limits>
#include <vector>

#include "kernels/cpu/internal.h"

namespace kvtier::kernels {
namespace {

constexpr char kWhat[] = "EstimateScores";

// Pages per parallel task: large enough to amortise the task, small enough
// to balance a batch of short and long sequences.
constexpr size_t kPagesPerTask = 256;

// Per score row (a query head, or a KV head's group), the vectors the
// digests are dotted with. For a cuboid with hi >= lo,
//   max(q*hi, q*lo) = max(q, 0)*hi + min(q, 0)*lo,
// so a row's score is pos.hi + neg.lo, and the group sum of the rows is the
// same with pos and neg summed over the group first: one pair of dot
// products per (page, KV head) whatever the GQA ratio. Layout
// [batch][rows][vecs][head_dim]: pos then neg (cuboid), or q (centroid).
std::vector<float> ScoreVectors(const EstimateArgs& a) {
  const size_t d = a.head_dim;
  const uint32_t group = a.n_q_heads / a.n_kv_heads;
  const uint32_t vecs = DigestVectors(a.kind);
  const size_t rows = a.rows();
  std::vector<float> q(d);
  std::vector<float> out(size_t{a.batch} * rows * vecs * d, 0.0f);
  for (size_t b = 0; b < a.batch; ++b) {
    for (uint32_t h = 0; h < a.n_q_heads; ++h) {
      internal::ToFloat(a.queries, a.query_type, (b * a.n_q_heads + h) * d, d, q.data());
      const size_t r = a.reduce == HeadReduce::kGroupSum ? h / group : h;
      float* pos = out.data() + (b * rows + r) * vecs * d;
      for (size_t c = 0; c < d; ++c) {
        if (vecs == 1) {
          pos[c] += q[c];
        } else {
          pos[c] += q[c] > 0.0f ? q[c] : 0.0f;
          pos[d + c] += q[c] < 0.0f ? q[c] : 0.0f;
        }
      }
    }
  }
  return out;
}

}  // namespace

absl::Status EstimateArgs::Validate() const {
  using internal::CheckNotNull;
  using internal::CheckRange;
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckFloatType(kWhat, "query_type", query_type));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "n_kv_heads", n_kv_heads, 1, internal::kMaxKvHeads));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "n_q_heads", n_q_heads, n_kv_heads, 64u * internal::kMaxKvHeads));
  if (n_q_heads % n_kv_heads != 0) {
    return absl::InvalidArgumentError("EstimateScores: n_q_heads must be a multiple of n_kv_heads");
  }
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "head_dim", head_dim, 1, internal::kMaxHeadDim));
  if (digest_type != ScalarType::kF32 && digest_type != ScalarType::kF16) {
    return absl::InvalidArgumentError("EstimateScores: digest_type must be f32 or f16");
  }
  if (kind != DigestKind::kMinMax && kind != DigestKind::kArkvaleMean &&
      kind != DigestKind::kCentroid) {
    return absl::InvalidArgumentError("EstimateScores: unknown digest kind");
  }
  if (reduce != HeadReduce::kGroupSum && reduce != HeadReduce::kPerQueryHead) {
    return absl::InvalidArgumentError("EstimateScores: unknown reduce");
  }
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "total_pages", total_pages, 0, INT32_MAX));
  if (batch == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "queries", queries));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "page_indptr", page_indptr));
  if (total_pages == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "digests", digests));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "digest_slots", digest_slots));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "scores", scores));
  return CheckRange(kWhat, "digest_capacity", digest_capacity, 1, INT32_MAX);
}

absl::Status EstimateArgs::ValidateHostArrays() const {
  KVTIER_KERNELS_RETURN_IF_ERROR(Validate());
  if (batch == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(
      internal::CheckIndptr(kWhat, "page_indptr", page_indptr, batch, total_pages));
  return internal::CheckIds(kWhat, "digest_slots", digest_slots, total_pages, digest_capacity);
}

absl::Status EstimateScoresCpu(const EstimateArgs& a, ThreadPool* pool) {
  KVTIER_KERNELS_RETURN_IF_ERROR(a.ValidateHostArrays());
  if (a.batch == 0 || a.total_pages == 0) return absl::OkStatus();

  const size_t d = a.head_dim;
  const uint32_t group = a.n_q_heads / a.n_kv_heads;
  const uint32_t vecs = DigestVectors(a.kind);
  const size_t slot_elems = DigestSlotElements(a.kind, a.n_kv_heads, a.head_dim);
  const size_t rows = a.rows();
  const std::vector<float> qvec = ScoreVectors(a);

  // Tasks are page ranges of the flattened page list; each page's sequence
  // is found once per task by walking page_indptr.
  internal::ParallelChunks(pool, a.total_pages, kPagesPerTask, [&](size_t begin, size_t end) {
    std::vector<float> digest(a.digest_type == ScalarType::kF32 ? 0 : slot_elems);
    uint32_t b = 0;
    while (static_cast<size_t>(a.page_indptr[b + 1]) <= begin) ++b;
    for (size_t p = begin; p < end; ++p) {
      while (static_cast<size_t>(a.page_indptr[b + 1]) <= p) ++b;
      const size_t first = a.page_indptr[b];
      const size_t n_b = a.page_indptr[b + 1] - first;
      const size_t slot = a.digest_slots[p];
      const float* dg;
      if (a.digest_type == ScalarType::kF32) {
        dg = static_cast<const float*>(a.digests) + slot * slot_elems;
      } else {
        internal::ToFloat(a.digests, a.digest_type, slot * slot_elems, slot_elems, digest.data());
        dg = digest.data();
      }
      float* out = a.scores + first * rows + (p - first);
      const float* qb = qvec.data() + b * rows * vecs * d;
      for (uint32_t g = 0; g < a.n_kv_heads; ++g) {
        const float* hi = dg + size_t{g} * vecs * d;
        const uint32_t r0 = a.reduce == HeadReduce::kGroupSum ? g : g * group;
        const uint32_t r1 = a.reduce == HeadReduce::kGroupSum ? g + 1 : (g + 1) * group;
        for (uint32_t r = r0; r < r1; ++r) {
          const float* qr = qb + size_t{r} * vecs * d;
          out[r * n_b] =
              vecs == 2 ? internal::Dot2(qr, hi, qr + d, hi + d, d) : internal::Dot(qr, hi, d);
        }
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace kvtier::kernels
