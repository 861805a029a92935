#include "kernels/cpu/internal.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace kvtier::kernels {

const char* ScalarTypeName(ScalarType t) {
  switch (t) {
    case ScalarType::kF32:
      return "f32";
    case ScalarType::kF16:
      return "f16";
    case ScalarType::kBF16:
      return "bf16";
    case ScalarType::kFp8E4M3:
      return "fp8_e4m3";
    case ScalarType::kInt8:
      return "int8";
  }
  return "unknown";
}

namespace internal {

absl::Status CheckRange(const char* what, const char* name, uint64_t v, uint64_t lo, uint64_t hi) {
  if (v >= lo && v <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": ", name, " = ", v, ", want [", lo, ", ", hi, "]"));
}

absl::Status CheckNotNull(const char* what, const char* name, const void* p) {
  if (p != nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(what, ": ", name, " is null"));
}

absl::Status CheckFloatType(const char* what, const char* name, ScalarType t) {
  if (IsFloatType(t)) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(what, ": ", name, " = ", ScalarTypeName(t), ", want f32, f16 or bf16"));
}

absl::Status CheckIndptr(const char* what, const char* name, const int32_t* indptr, size_t n,
                         uint32_t total) {
  if (indptr[0] != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", name, "[0] = ", indptr[0], ", want 0"));
  }
  for (size_t i = 0; i < n; ++i) {
    if (indptr[i + 1] < indptr[i]) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", name, " decreases at ", i + 1,
                                                     ": ", indptr[i], " -> ", indptr[i + 1]));
    }
  }
  if (static_cast<uint32_t>(indptr[n]) != total) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", name, "[", n, "] = ", indptr[n], ", want total ", total));
  }
  return absl::OkStatus();
}

absl::Status CheckIds(const char* what, const char* name, const int32_t* ids, size_t n,
                      uint32_t limit) {
  for (size_t i = 0; i < n; ++i) {
    if (ids[i] < 0 || static_cast<uint32_t>(ids[i]) >= limit) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, ": ", name, "[", i, "] = ", ids[i], ", want [0, ", limit, ")"));
    }
  }
  return absl::OkStatus();
}

void ParallelChunks(ThreadPool* pool, size_t n, size_t grain,
                    absl::FunctionRef<void(size_t, size_t)> fn) {
  if (n == 0) return;
  const size_t threads = pool == nullptr ? 1 : static_cast<size_t>(pool->num_threads());
  grain = std::max<size_t>(1, std::min(grain, (n + threads - 1) / threads));
  const size_t chunks = (n + grain - 1) / grain;
  ParallelFor(pool, chunks, [&](size_t c) {
    const size_t begin = c * grain;
    fn(begin, std::min(n, begin + grain));
  });
}

KVTIER_KERNELS_MULTIVERSION void ToFloat(const void* src, ScalarType t, size_t offset, size_t n,
                                         float* dst) {
  if (t == ScalarType::kF32) {
    std::copy_n(static_cast<const float*>(src) + offset, n, dst);
  } else if (t == ScalarType::kF16) {
    const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
    for (size_t i = 0; i < n; ++i) dst[i] = HalfToFloat(s[i]);
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src) + offset;
    for (size_t i = 0; i < n; ++i) dst[i] = BF16ToFloat(s[i]);
  }
}

}  // namespace internal
}  // namespace kvtier::kernels
