# Checks that Clang's thread-safety analysis, as the checked build runs it
# (cmake/KvtierChecks.cmake), rejects code that breaks abseil's lock
# annotations (run by CTest with -P): a GUARDED_BY member touched without
# its mutex, and a REQUIRES method called without it, fail to compile; the
# same code holding the lock compiles.
# Inputs: CXX (clang++), WORK_DIR.
include(${CMAKE_CURRENT_LIST_DIR}/expect_compile.cmake)
set(prelude "#include \"absl/base/thread_annotations.h\"
#include \"absl/synchronization/mutex.h\"
class Counter {
 public:
  void Locked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { ++n_; }
  void Body();
 private:
  absl::Mutex mu_;
  int n_ ABSL_GUARDED_BY(mu_) = 0;
};")
set(flags -std=c++20 -Wthread-safety -Werror)
set(diagnostic "Wthread-safety-analysis")

expect_compile(unguarded_write "void Counter::Body() { ++n_; }" FALSE)
expect_compile(requires_unmet "void Counter::Body() { Locked(); }" FALSE)
expect_compile(locked "void Counter::Body() { absl::MutexLock lock(&mu_); ++n_; Locked(); }"
               TRUE)
