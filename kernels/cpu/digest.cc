#include "kernels/digest.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "kernels/cpu/internal.h"

namespace kvtier::kernels {
namespace {

constexpr char kWhat[] = "ComputeDigests";

void StoreVector(void* base, ScalarType t, size_t offset, const float* v, size_t n, int direction) {
  if (t == ScalarType::kF32) {
    std::copy_n(v, n, static_cast<float*>(base) + offset);
    return;
  }
  uint16_t* out = static_cast<uint16_t*>(base) + offset;
  if (direction == 0) {
    for (size_t i = 0; i < n; ++i) out[i] = FloatToHalf(v[i]);
  } else {
    for (size_t i = 0; i < n; ++i) out[i] = FloatToHalfDirected(v[i], direction > 0);
  }
}

// Digest of one (page, head) over `tokens` fp32 keys: key t at
// keys + t * row. kCentroid leaves the mean in `centre_or_mean`; the cuboids
// leave hi, lo.
KVTIER_KERNELS_MULTIVERSION void DigestOne(const DigestArgs& a, const float* keys, size_t row,
                                           uint32_t tokens, float* hi, float* lo,
                                           float* centre_or_mean) {
  const size_t d = a.head_dim;
  if (a.kind == DigestKind::kCentroid) {
    std::fill_n(centre_or_mean, d, 0.0f);
    for (uint32_t t = 0; t < tokens; ++t) {
      const float* k = keys + t * row;
      for (size_t c = 0; c < d; ++c) centre_or_mean[c] += k[c];
    }
    const float inv = 1.0f / static_cast<float>(tokens);
    for (size_t c = 0; c < d; ++c) centre_or_mean[c] *= inv;
    return;
  }
  std::copy_n(keys, d, hi);
  std::copy_n(keys, d, lo);
  for (uint32_t t = 1; t < tokens; ++t) {
    const float* k = keys + t * row;
    for (size_t c = 0; c < d; ++c) {
      hi[c] = hi[c] < k[c] ? k[c] : hi[c];
      lo[c] = lo[c] > k[c] ? k[c] : lo[c];
    }
  }
  if (a.kind == DigestKind::kMinMax) return;
  float* centre = centre_or_mean;
  for (size_t c = 0; c < d; ++c) centre[c] = 0.5f * (hi[c] + lo[c]);
  std::fill_n(hi, d, 0.0f);  // hi accumulates sum |k - centre|
  for (uint32_t t = 0; t < tokens; ++t) {
    const float* k = keys + t * row;
    for (size_t c = 0; c < d; ++c) {
      const float dev = k[c] - centre[c];
      hi[c] += dev < 0.0f ? -dev : dev;
    }
  }
  const float inv = 1.0f / static_cast<float>(tokens);
  for (size_t c = 0; c < d; ++c) {
    const float r = hi[c] * inv;
    hi[c] = centre[c] + r;
    lo[c] = centre[c] - r;
  }
}

}  // namespace

absl::Status DigestArgs::Validate() const {
  using internal::CheckNotNull;
  using internal::CheckRange;
  KVTIER_KERNELS_RETURN_IF_ERROR(internal::CheckFloatType(kWhat, "key_type", key_type));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "page_size", page_size, 1, internal::kMaxPageSize));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      CheckRange(kWhat, "n_kv_heads", n_kv_heads, 1, internal::kMaxKvHeads));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "head_dim", head_dim, 1, internal::kMaxHeadDim));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "num_tokens", num_tokens, 0, page_size));
  const size_t k_bytes = size_t{page_size} * n_kv_heads * head_dim * ScalarBytes(key_type);
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "page_stride_bytes", page_stride_bytes, k_bytes,
                                            std::numeric_limits<uint64_t>::max()));
  if (kind != DigestKind::kMinMax && kind != DigestKind::kArkvaleMean &&
      kind != DigestKind::kCentroid) {
    return absl::InvalidArgumentError("ComputeDigests: unknown kind");
  }
  if (digest_type != ScalarType::kF32 && digest_type != ScalarType::kF16) {
    return absl::InvalidArgumentError("ComputeDigests: digest_type must be f32 or f16");
  }
  if (n_pages == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "pool", pool));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "page_ids", page_ids));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "digests", digests));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckNotNull(kWhat, "digest_slots", digest_slots));
  KVTIER_KERNELS_RETURN_IF_ERROR(CheckRange(kWhat, "pool_pages", pool_pages, 1, INT32_MAX));
  return CheckRange(kWhat, "digest_capacity", digest_capacity, 1, INT32_MAX);
}

absl::Status ComputeDigestsCpu(const DigestArgs& a, ThreadPool* pool) {
  KVTIER_KERNELS_RETURN_IF_ERROR(a.Validate());
  if (a.n_pages == 0) return absl::OkStatus();
  KVTIER_KERNELS_RETURN_IF_ERROR(
      internal::CheckIds(kWhat, "page_ids", a.page_ids, a.n_pages, a.pool_pages));
  KVTIER_KERNELS_RETURN_IF_ERROR(
      internal::CheckIds(kWhat, "digest_slots", a.digest_slots, a.n_pages, a.digest_capacity));
  const uint32_t tokens = a.num_tokens == 0 ? a.page_size : a.num_tokens;
  const size_t d = a.head_dim;
  const uint32_t vecs = DigestVectors(a.kind);
  const size_t slot_elems = DigestSlotElements(a.kind, a.n_kv_heads, a.head_dim);
  const size_t row = size_t{a.n_kv_heads} * d;
  // A task per page: its K is converted in one sequential pass, then each
  // head's keys are read from the fp32 copy.
  internal::ParallelChunks(pool, a.n_pages, 4, [&](size_t begin, size_t end) {
    std::vector<float> keys(size_t{tokens} * row);
    std::vector<float> buf(3 * d);
    float* hi = buf.data();
    float* lo = hi + d;
    float* extra = lo + d;
    for (size_t i = begin; i < end; ++i) {
      const void* page_k = static_cast<const char*>(a.pool) + a.page_ids[i] * a.page_stride_bytes;
      internal::ToFloat(page_k, a.key_type, 0, keys.size(), keys.data());
      for (uint32_t head = 0; head < a.n_kv_heads; ++head) {
        DigestOne(a, keys.data() + size_t{head} * d, row, tokens, hi, lo, extra);
        const size_t out = a.digest_slots[i] * slot_elems + size_t{head} * vecs * d;
        if (a.kind == DigestKind::kCentroid) {
          StoreVector(a.digests, a.digest_type, out, extra, d, 0);
        } else {
          const bool outward = a.kind == DigestKind::kMinMax;
          StoreVector(a.digests, a.digest_type, out, hi, d, outward ? 1 : 0);
          StoreVector(a.digests, a.digest_type, out + d, lo, d, outward ? -1 : 0);
        }
      }
    }
  });
  return absl::OkStatus();
}

}  // namespace kvtier::kernels
