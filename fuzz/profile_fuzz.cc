// The budget allocators' profile files (XKV, LU-KV, LU-KV table), fuzzed;
// what a reader accepts must pass its validator.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "worker/budget/profile.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier;
  const std::string path = fuzz::WriteScratchFile(data, size);
  if (absl::StatusOr<XkvProfile> p = ReadXkvProfile(path); p.ok()) {
    if (!ValidateXkvProfile(*p).ok()) __builtin_trap();
  }
  if (absl::StatusOr<LukvProfile> p = ReadLukvProfile(path); p.ok()) {
    if (!ValidateLukvProfile(*p).ok()) __builtin_trap();
  }
  if (absl::StatusOr<LukvTable> t = ReadLukvTable(path); t.ok()) {
    if (!ValidateLukvTable(*t).ok()) __builtin_trap();
  }
  return 0;
}
