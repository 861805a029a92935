// GgufFile: a validated, memory-mapped GGUF file (versions 2 and 3).
//
// Layout (little-endian): "GGUF" magic, u32 version, u64 tensor count, u64
// metadata count; metadata key/value pairs (key: u64 length + UTF-8 bytes;
// u32 value type; value); tensor infos (name, u32 n_dims, u64 ne[n_dims]
// with ne[0] the fastest-varying, u32 ggml type, u64 offset); padding to
// `general.alignment` (default 32); the tensor data, each tensor at its
// offset from the start of the data section.
//
// Open() checks everything before returning: every length and count against
// the bytes left, known value and tensor types, dimension products without
// overflow, rows that are whole blocks, offsets aligned and tensors inside
// the file, unique keys and names. Errors:
//   INVALID_ARGUMENT  bad magic, unsupported version, unknown value or
//                     tensor type, inconsistent counts/dims/alignment,
//                     duplicates;
//   DATA_LOSS         the file ends early (truncated header, metadata,
//                     tensor infos, or tensor data past the end).
//
// Thread-safety: immutable after Open; all accessors are const.
#ifndef KVTIER_WORKER_MODEL_LOADER_GGUF_H_
#define KVTIER_WORKER_MODEL_LOADER_GGUF_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "common/mapped_file.h"
#include "worker/model/loader/ggml_types.h"

namespace kvtier::model {

enum class GgufValueType : uint32_t {
  kUint8 = 0,
  kInt8 = 1,
  kUint16 = 2,
  kInt16 = 3,
  kUint32 = 4,
  kInt32 = 5,
  kFloat32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kUint64 = 10,
  kInt64 = 11,
  kFloat64 = 12,
};

// One metadata value. Scalars live in the member for their kind; arrays hold
// their elements (all of `element_type`) in `array`.
struct GgufValue {
  GgufValueType type = GgufValueType::kUint8;
  uint64_t u = 0;  // unsigned integers and bool
  int64_t i = 0;   // signed integers
  double f = 0;    // floats
  std::string s;   // strings
  GgufValueType element_type = GgufValueType::kUint8;  // arrays only
  std::vector<GgufValue> array;
};

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::kF32;
  std::vector<uint64_t> dims;  // ne[0] first (the row length)
  uint64_t n_values = 0;
  absl::Span<const uint8_t> data;  // inside the mapping
};

class GgufFile {
 public:
  static constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
  static constexpr uint32_t kDefaultAlignment = 32;

  static absl::StatusOr<std::unique_ptr<GgufFile>> Open(
      const std::string& path);

  uint32_t version() const { return version_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  // nullptr when absent.
  const GgufTensor* FindTensor(absl::string_view name) const;
  const GgufValue* FindValue(absl::string_view key) const;

  // Typed getters: NOT_FOUND when absent, INVALID_ARGUMENT when the stored
  // type does not convert (a negative or too large integer, a non-number).
  absl::StatusOr<std::string> GetString(absl::string_view key) const;
  absl::StatusOr<uint64_t> GetUint(absl::string_view key) const;
  absl::StatusOr<double> GetFloat(absl::string_view key) const;
  absl::StatusOr<bool> GetBool(absl::string_view key) const;
  absl::StatusOr<std::vector<std::string>> GetStringArray(
      absl::string_view key) const;
  absl::StatusOr<std::vector<float>> GetFloatArray(absl::string_view key) const;
  absl::StatusOr<std::vector<int64_t>> GetIntArray(absl::string_view key) const;

  // Dequantizes a tensor to fp32. INVALID_ARGUMENT when absent or when its
  // dims differ from `want_dims` (ne[0] first).
  absl::StatusOr<std::vector<float>> ReadTensor(
      absl::string_view name, absl::Span<const uint64_t> want_dims) const;

  // The bounds-checked reader Open uses (defined in gguf.cc).
  class Parser;

 private:
  // Open's work; its errors may not name the file.
  static absl::StatusOr<std::unique_ptr<GgufFile>> ParseFile(const std::string& path);
  explicit GgufFile(std::unique_ptr<MappedFile> file)
      : file_(std::move(file)) {}
  // Reads n_kv pairs into metadata_; returns the data alignment.
  absl::StatusOr<uint64_t> ParseMetadata(Parser& p, uint64_t n_kv);

  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  absl::flat_hash_map<std::string, GgufValue> metadata_;
  std::vector<GgufTensor> tensors_;
  absl::flat_hash_map<std::string, size_t> tensor_index_;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_LOADER_GGUF_H_
