# Checks that a dropped absl::Status or absl::StatusOr fails kvtier's build
# (run by CTest with -P): with -Werror=unused-result, as every kvtier target
# is built (cmake/KvtierChecks.cmake), a call whose result is dropped does
# not compile, while using the result, IgnoreError() and an explicit (void)
# do. It fails if abseil ever stops declaring them [[nodiscard]].
# Inputs: CXX (the compiler), WORK_DIR.
include(${CMAKE_CURRENT_LIST_DIR}/expect_compile.cmake)
set(prelude "#include \"absl/status/status.h\"
#include \"absl/status/statusor.h\"
absl::Status MakeStatus();
absl::StatusOr<int> MakeValue();")
set(flags -std=c++20 -Werror=unused-result)
set(diagnostic "nodiscard|unused-result")

expect_compile(dropped_status "void F() { MakeStatus(); }" FALSE)
expect_compile(dropped_statusor "void F() { MakeValue(); }" FALSE)
expect_compile(used "void F() { absl::Status s = MakeStatus(); if (!s.ok()) return; \
absl::StatusOr<int> v = MakeValue(); (void)v; }" TRUE)
expect_compile(ignored_explicitly "void F() { MakeStatus().IgnoreError(); (void)MakeValue(); }"
               TRUE)
