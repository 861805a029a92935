// Conversions between the wire messages of kvtier.v1 and the common types
// (PageKey, PageLayout, DType, Arrangement), and between absl::Status and
// grpc::Status. This is the one place where gRPC's error type meets ours:
// the service and the client both convert through it.
//
// Every `FromProto` validates what it converts and returns INVALID_ARGUMENT
// with a message naming the field (prefixed by `what`, e.g. "pages[3].key").
// The `ToProto` functions cannot fail: common types are valid by
// construction or were validated on the way in.
//
// Thread-safety: all functions are pure and thread-safe.
#ifndef KVTIER_PROTO_KVTIER_V1_CONVERT_H_
#define KVTIER_PROTO_KVTIER_V1_CONVERT_H_

#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "grpcpp/support/status.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::v1 {

// DTYPE_UNSPECIFIED and unknown numbers -> INVALID_ARGUMENT.
absl::StatusOr<kvtier::DType> DTypeFromProto(v1::DType dtype, absl::string_view what);
v1::DType DTypeToProto(kvtier::DType dtype);

// ARRANGEMENT_UNSPECIFIED and unknown numbers -> INVALID_ARGUMENT.
absl::StatusOr<kvtier::Arrangement> ArrangementFromProto(v1::Arrangement arrangement,
                                                         absl::string_view what);
v1::Arrangement ArrangementToProto(kvtier::Arrangement arrangement);

// Converts and runs PageLayout::Validate().
absl::StatusOr<kvtier::PageLayout> LayoutFromProto(const v1::PageLayout& layout,
                                                   absl::string_view what);
void LayoutToProto(const kvtier::PageLayout& layout, v1::PageLayout* out);

// A chain hash: exactly 16 bytes.
absl::StatusOr<kvtier::Hash128> HashFromProto(absl::string_view bytes, absl::string_view what);

absl::StatusOr<kvtier::PageKey> KeyFromProto(const v1::PageKey& key, absl::string_view what);
void KeyToProto(const kvtier::PageKey& key, v1::PageKey* out);

// Status conversion. absl and gRPC share code numbers; the message is kept.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace kvtier::v1

#endif  // KVTIER_PROTO_KVTIER_V1_CONVERT_H_
