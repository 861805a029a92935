// Helpers shared by the fuzz targets.
#ifndef KVTIER_FUZZ_FUZZ_UTIL_H_
#define KVTIER_FUZZ_FUZZ_UTIL_H_

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

namespace kvtier::fuzz {

// Writes the input to this process's scratch file and returns its path,
// for decoders that read files (the same path every call). The file is
// removed at exit.
inline std::string WriteScratchFile(const uint8_t* data, size_t size) {
  static const std::string path = (std::filesystem::temp_directory_path() /
                                   ("kvtier_fuzz_" + std::to_string(getpid()))).string();
  // Registered after `path` is built, so it runs before `path` is destroyed.
  static const bool removed_at_exit = [] {
    return std::atexit([] {
             std::error_code ignored;
             std::filesystem::remove(path, ignored);
           }) == 0;
  }();
  (void)removed_at_exit;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) std::abort();
  if (size > 0 && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// A fresh directory for this process's state, removed at exit.
inline std::string ScratchDir(const std::string& name) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() /
                                    ("kvtier_fuzz_" + name + "_" + std::to_string(getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  static const std::string removed = dir.string();
  std::atexit([] { std::filesystem::remove_all(removed); });
  return dir.string();
}

}  // namespace kvtier::fuzz

#endif  // KVTIER_FUZZ_FUZZ_UTIL_H_
