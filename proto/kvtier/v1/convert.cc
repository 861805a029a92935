#include "kvtier/v1/convert.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvtier::v1 {

absl::StatusOr<kvtier::DType> DTypeFromProto(v1::DType dtype, absl::string_view what) {
  switch (dtype) {
    case DTYPE_F32: return kvtier::DType::kF32;
    case DTYPE_F16: return kvtier::DType::kF16;
    case DTYPE_BF16: return kvtier::DType::kBF16;
    case DTYPE_FP8_E4M3: return kvtier::DType::kFp8E4M3;
    case DTYPE_INT8: return kvtier::DType::kInt8;
    case DTYPE_UNSPECIFIED:
      return absl::InvalidArgumentError(absl::StrCat(what, ": dtype is unspecified"));
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: unknown dtype %d", what, static_cast<int>(dtype)));
}

v1::DType DTypeToProto(kvtier::DType dtype) {
  switch (dtype) {
    case kvtier::DType::kF32: return DTYPE_F32;
    case kvtier::DType::kF16: return DTYPE_F16;
    case kvtier::DType::kBF16: return DTYPE_BF16;
    case kvtier::DType::kFp8E4M3: return DTYPE_FP8_E4M3;
    case kvtier::DType::kInt8: return DTYPE_INT8;
  }
  return DTYPE_UNSPECIFIED;
}

absl::StatusOr<kvtier::Arrangement> ArrangementFromProto(v1::Arrangement arrangement,
                                                         absl::string_view what) {
  switch (arrangement) {
    case ARRANGEMENT_K_THEN_V: return kvtier::Arrangement::kKThenV;
    case ARRANGEMENT_TOKEN_INTERLEAVED: return kvtier::Arrangement::kTokenInterleaved;
    case ARRANGEMENT_UNSPECIFIED:
      return absl::InvalidArgumentError(absl::StrCat(what, ": arrangement is unspecified"));
    default: break;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: unknown arrangement %d", what, static_cast<int>(arrangement)));
}

v1::Arrangement ArrangementToProto(kvtier::Arrangement arrangement) {
  switch (arrangement) {
    case kvtier::Arrangement::kKThenV: return ARRANGEMENT_K_THEN_V;
    case kvtier::Arrangement::kTokenInterleaved: return ARRANGEMENT_TOKEN_INTERLEAVED;
  }
  return ARRANGEMENT_UNSPECIFIED;
}

absl::StatusOr<kvtier::PageLayout> LayoutFromProto(const v1::PageLayout& layout,
                                                   absl::string_view what) {
  kvtier::PageLayout out;
  out.page_size = layout.page_size();
  out.n_kv_heads = layout.n_kv_heads();
  out.head_dim = layout.head_dim();
  absl::StatusOr<kvtier::DType> dtype = DTypeFromProto(layout.dtype(), what);
  if (!dtype.ok()) return dtype.status();
  out.dtype = *dtype;
  absl::StatusOr<kvtier::Arrangement> arrangement =
      ArrangementFromProto(layout.arrangement(), what);
  if (!arrangement.ok()) return arrangement.status();
  out.arrangement = *arrangement;
  if (absl::Status s = out.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", s.message()));
  }
  return out;
}

void LayoutToProto(const kvtier::PageLayout& layout, v1::PageLayout* out) {
  out->set_page_size(layout.page_size);
  out->set_n_kv_heads(layout.n_kv_heads);
  out->set_head_dim(layout.head_dim);
  out->set_dtype(DTypeToProto(layout.dtype));
  out->set_arrangement(ArrangementToProto(layout.arrangement));
}

absl::StatusOr<kvtier::Hash128> HashFromProto(absl::string_view bytes, absl::string_view what) {
  if (bytes.size() != kvtier::Hash128::kBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: hash must be exactly %d bytes, got %d", what, kvtier::Hash128::kBytes,
        bytes.size()));
  }
  return kvtier::Hash128::FromCanonical(reinterpret_cast<const uint8_t*>(bytes.data()));
}

absl::StatusOr<kvtier::PageKey> KeyFromProto(const v1::PageKey& key, absl::string_view what) {
  absl::StatusOr<kvtier::Hash128> hash = HashFromProto(key.hash(), what);
  if (!hash.ok()) return hash.status();
  return kvtier::PageKey{.hash = *hash, .layer = key.layer()};
}

void KeyToProto(const kvtier::PageKey& key, v1::PageKey* out) {
  out->set_hash(key.hash.CanonicalString());
  out->set_layer(key.layer);
}

grpc::Status ToGrpcStatus(const absl::Status& status) {
  if (status.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()),
                      std::string(status.message()));
}

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  int code = static_cast<int>(status.error_code());
  // gRPC codes 1..16 equal absl's; anything else is not a code we know.
  if (code < 1 || code > 16) code = static_cast<int>(absl::StatusCode::kUnknown);
  return absl::Status(static_cast<absl::StatusCode>(code), status.error_message());
}

}  // namespace kvtier::v1
