#include "common/page_layout.h"

#include <cstring>

#include "absl/strings/str_format.h"
#include "common/endian.h"

namespace kvtier {

size_t DTypeBytes(DType dtype) {
  switch (dtype) {
    case DType::kF32: return 4;
    case DType::kF16: return 2;
    case DType::kBF16: return 2;
    case DType::kFp8E4M3: return 1;
    case DType::kInt8: return 1;
  }
  return 0;
}

const char* DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF32: return "f32";
    case DType::kF16: return "f16";
    case DType::kBF16: return "bf16";
    case DType::kFp8E4M3: return "fp8_e4m3";
    case DType::kInt8: return "int8";
  }
  return "unknown";
}

bool IsQuantized(DType dtype) {
  return dtype == DType::kFp8E4M3 || dtype == DType::kInt8;
}

absl::Status PageLayout::Validate() const {
  if (page_size == 0 || page_size > kMaxPageSize) {
    return absl::InvalidArgumentError(
        absl::StrFormat("page_size %u out of range [1, %u]", page_size, kMaxPageSize));
  }
  if (n_kv_heads == 0 || n_kv_heads > kMaxKvHeads) {
    return absl::InvalidArgumentError(
        absl::StrFormat("n_kv_heads %u out of range [1, %u]", n_kv_heads, kMaxKvHeads));
  }
  if (head_dim == 0 || head_dim > kMaxHeadDim) {
    return absl::InvalidArgumentError(
        absl::StrFormat("head_dim %u out of range [1, %u]", head_dim, kMaxHeadDim));
  }
  if (DTypeBytes(dtype) == 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unknown dtype %d", static_cast<int>(dtype)));
  }
  if (arrangement != Arrangement::kKThenV && arrangement != Arrangement::kTokenInterleaved) {
    return absl::InvalidArgumentError(
        absl::StrFormat("unknown arrangement %d", static_cast<int>(arrangement)));
  }
  if (PageBytes() > kMaxPageBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "page of %zu bytes exceeds the limit of %zu bytes", PageBytes(), kMaxPageBytes));
  }
  return absl::OkStatus();
}

size_t PageLayout::ElementsPerTensor() const {
  return size_t{page_size} * n_kv_heads * head_dim;
}

size_t PageLayout::ElementBytes() const {
  return 2 * ElementsPerTensor() * DTypeBytes(dtype);
}

size_t PageLayout::ScaleBytes() const {
  const size_t per_token = size_t{page_size} * n_kv_heads;
  switch (dtype) {
    case DType::kInt8: return (size_t{n_kv_heads} * head_dim + per_token) * sizeof(float);
    case DType::kFp8E4M3: return 2 * per_token * sizeof(float);
    default: return 0;
  }
}

size_t PageLayout::PageBytes() const { return ElementBytes() + ScaleBytes(); }

void PageLayout::Encode(uint8_t out[kEncodedBytes]) const {
  StoreLe32(out + 0, page_size);
  StoreLe32(out + 4, n_kv_heads);
  StoreLe32(out + 8, head_dim);
  out[12] = static_cast<uint8_t>(dtype);
  out[13] = static_cast<uint8_t>(arrangement);
  out[14] = 0;
  out[15] = 0;
}

absl::Status PageLayout::Decode(const uint8_t in[kEncodedBytes], PageLayout* out) {
  PageLayout layout;
  layout.page_size = LoadLe32(in + 0);
  layout.n_kv_heads = LoadLe32(in + 4);
  layout.head_dim = LoadLe32(in + 8);
  layout.dtype = static_cast<DType>(in[12]);
  layout.arrangement = static_cast<Arrangement>(in[13]);
  if (in[14] != 0 || in[15] != 0) {
    return absl::InvalidArgumentError("page layout encoding has non-zero reserved bytes");
  }
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  *out = layout;
  return absl::OkStatus();
}

std::string PageLayout::DebugString() const {
  return absl::StrFormat("{page_size=%u n_kv_heads=%u head_dim=%u dtype=%s bytes=%zu}",
                         page_size, n_kv_heads, head_dim, DTypeName(dtype),
                         Validate().ok() ? PageBytes() : 0);
}

}  // namespace kvtier
