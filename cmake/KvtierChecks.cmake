# The checks every kvtier target compiles under (project code only: imported
# libraries are system headers, generated protobuf code opts out with -w).
#
#   KVTIER_WERROR    (ON)  -Wall -Wextra -Werror.
#   always                 -Werror=unused-result: abseil declares Status and
#                          StatusOr [[nodiscard]] (status_internal.h,
#                          statusor.h), so a dropped one fails the build
#                          (checked by the status_must_use test).
#   Clang                  adds -Wthread-safety (abseil's GUARDED_BY and
#                          friends are checked) and -Wthread-safety-beta.
#   KVTIER_SANITIZE  ("")  a comma list for -fsanitize=, e.g.
#                          "address,undefined"; UBSan then aborts on the
#                          first finding instead of printing and going on.
#   KVTIER_FUZZ     (OFF)  Clang only: project code gets libFuzzer's
#                          coverage instrumentation and fuzz/ builds its
#                          targets (fuzz/README.md).
option(KVTIER_WERROR "Warnings are errors in project code" ON)
set(KVTIER_SANITIZE "" CACHE STRING "Sanitizers for -fsanitize= (e.g. address,undefined)")

set(_cxx "$<COMPILE_LANGUAGE:CXX>")
add_compile_options("$<${_cxx}:-Wall;-Wextra>")
if(KVTIER_WERROR)
  add_compile_options("$<${_cxx}:-Werror>")
endif()
# Even without KVTIER_WERROR a dropped Status is an error.
add_compile_options("$<${_cxx}:-Werror=unused-result>")
if(CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
  add_compile_options("$<${_cxx}:-Wthread-safety;-Wthread-safety-beta>")
endif()

option(KVTIER_FUZZ "Build the libFuzzer targets of fuzz/ (Clang)" OFF)
if(KVTIER_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "KVTIER_FUZZ needs Clang (libFuzzer)")
  endif()
  add_compile_options("$<${_cxx}:-fsanitize=fuzzer-no-link>")
endif()

if(KVTIER_SANITIZE)
  add_compile_options("$<${_cxx}:-fsanitize=${KVTIER_SANITIZE};-fno-omit-frame-pointer>")
  if(KVTIER_SANITIZE MATCHES "undefined")
    add_compile_options("$<${_cxx}:-fno-sanitize-recover=undefined>")
  endif()
  add_link_options("-fsanitize=${KVTIER_SANITIZE}")
endif()
