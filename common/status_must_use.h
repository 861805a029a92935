// Makes every absl::Status and absl::StatusOr<T> that a call returns and
// its caller drops a compile error in kvtier's own code: the build
// force-includes this header (-include) and compiles with
// -Werror=unused-result. Abseil marks Status [[nodiscard]] only from its
// 2023 releases on; Debian's release carries the declaration commented out
// ("// class ABSL_MUST_USE_RESULT Status;", status.h), so the attribute is
// given here, on a declaration that precedes abseil's definitions and that
// both GCC and Clang carry over to them.
//
// A Status that is meant to be dropped says so: `status.IgnoreError()`.
#ifndef KVTIER_COMMON_STATUS_MUST_USE_H_
#define KVTIER_COMMON_STATUS_MUST_USE_H_

#ifdef __cplusplus
#include "absl/base/config.h"

namespace absl {
ABSL_NAMESPACE_BEGIN
class [[nodiscard]] Status;
template <typename T>
class [[nodiscard]] StatusOr;
ABSL_NAMESPACE_END
}  // namespace absl
#endif  // __cplusplus

#endif  // KVTIER_COMMON_STATUS_MUST_USE_H_
