// MappedFile: a read-only mmap of a whole file, unmapped on destruction.
//
// Thread-safety: immutable after Open; bytes() may be read from any thread.
#ifndef KVTIER_COMMON_MAPPED_FILE_H_
#define KVTIER_COMMON_MAPPED_FILE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier {

class MappedFile {
 public:
  // NOT_FOUND / PERMISSION_DENIED / INVALID_ARGUMENT (not a regular file)
  // with the path and errno text. An empty file maps to an empty span.
  static absl::StatusOr<std::unique_ptr<MappedFile>> Open(
      const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  absl::Span<const uint8_t> bytes() const { return {data_, size_}; }
  const std::string& path() const { return path_; }

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  const std::string path_;
  const uint8_t* const data_;
  const size_t size_;
};

}  // namespace kvtier

#endif  // KVTIER_COMMON_MAPPED_FILE_H_
