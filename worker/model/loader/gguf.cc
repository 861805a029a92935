#include "worker/model/loader/gguf.h"

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"

namespace kvtier::model {
namespace {

constexpr uint32_t kMaxDims = 4;
constexpr int kMaxArrayDepth = 4;
// Metadata array elements of a file, all arrays together: a vocabulary and
// its merges take well under a million (Llama 3: 128K tokens, 280K merges).
constexpr uint64_t kMaxArrayElements = uint64_t{1} << 22;

bool IsKnownValueType(uint32_t t) { return t <= 12; }

// Smallest encoded size of one value of type t; lets a count be checked
// against the bytes left before anything is allocated.
uint64_t MinEncodedBytes(GgufValueType t) {
  switch (t) {
    case GgufValueType::kUint8:
    case GgufValueType::kInt8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kUint16:
    case GgufValueType::kInt16:
      return 2;
    case GgufValueType::kUint32:
    case GgufValueType::kInt32:
    case GgufValueType::kFloat32:
      return 4;
    case GgufValueType::kString:
    case GgufValueType::kUint64:
    case GgufValueType::kInt64:
    case GgufValueType::kFloat64:
      return 8;
    case GgufValueType::kArray:
      return 12;
  }
  return 1;
}

}  // namespace

// Bounds-checked little-endian cursor over the mapped bytes.
class GgufFile::Parser {
 public:
  explicit Parser(absl::Span<const uint8_t> bytes) : bytes_(bytes) {}

  size_t pos() const { return pos_; }
  size_t left() const { return bytes_.size() - pos_; }

  absl::Status Need(uint64_t n, absl::string_view what) const {
    if (n > left()) {
      return absl::DataLossError(absl::StrCat(
          "GGUF truncated: ", what, " needs ", n, " bytes at offset ", pos_,
          ", file has ", left(), " left"));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::StatusOr<T> Read(absl::string_view what) {
    RETURN_IF_ERROR(Need(sizeof(T), what));
    T v;
    std::memcpy(&v, bytes_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  absl::StatusOr<std::string> ReadString(absl::string_view what) {
    ASSIGN_OR_RETURN(uint64_t n, Read<uint64_t>(what));
    RETURN_IF_ERROR(Need(n, what));
    std::string s(reinterpret_cast<const char*>(bytes_.data() + pos_), n);
    pos_ += n;
    return s;
  }

  // Reads a T and widens it into `out`.
  template <typename T, typename U>
  absl::Status ReadInto(U& out, absl::string_view what) {
    ASSIGN_OR_RETURN(T v, Read<T>(what));
    out = v;
    return absl::OkStatus();
  }

  absl::StatusOr<GgufValue> ReadValue(uint32_t raw_type, int depth);

 private:
  absl::Status ReadScalar(GgufValue& v);
  absl::Status ReadArray(GgufValue& v, int depth);

  absl::Span<const uint8_t> bytes_;
  size_t pos_ = 0;
  uint64_t array_elements_ = 0;  // read so far, all arrays together
};

absl::Status GgufFile::Parser::ReadScalar(GgufValue& v) {
  switch (v.type) {
    case GgufValueType::kUint8:
      return ReadInto<uint8_t>(v.u, "u8");
    case GgufValueType::kInt8:
      return ReadInto<int8_t>(v.i, "i8");
    case GgufValueType::kUint16:
      return ReadInto<uint16_t>(v.u, "u16");
    case GgufValueType::kInt16:
      return ReadInto<int16_t>(v.i, "i16");
    case GgufValueType::kUint32:
      return ReadInto<uint32_t>(v.u, "u32");
    case GgufValueType::kInt32:
      return ReadInto<int32_t>(v.i, "i32");
    case GgufValueType::kUint64:
      return ReadInto<uint64_t>(v.u, "u64");
    case GgufValueType::kInt64:
      return ReadInto<int64_t>(v.i, "i64");
    case GgufValueType::kFloat32:
      return ReadInto<float>(v.f, "f32");
    case GgufValueType::kFloat64:
      return ReadInto<double>(v.f, "f64");
    case GgufValueType::kBool: {
      RETURN_IF_ERROR(ReadInto<uint8_t>(v.u, "bool"));
      if (v.u > 1) {
        return absl::InvalidArgumentError(
            absl::StrCat("GGUF bool value ", v.u, " at offset ", pos_ - 1));
      }
      return absl::OkStatus();
    }
    case GgufValueType::kString: {
      ASSIGN_OR_RETURN(v.s, ReadString("string value"));
      return absl::OkStatus();
    }
    case GgufValueType::kArray:
      break;
  }
  return absl::InternalError("ReadScalar called on an array");
}

absl::Status GgufFile::Parser::ReadArray(GgufValue& v, int depth) {
  if (depth >= kMaxArrayDepth) {
    return absl::InvalidArgumentError("GGUF arrays nested too deeply");
  }
  ASSIGN_OR_RETURN(uint32_t et, Read<uint32_t>("array type"));
  ASSIGN_OR_RETURN(uint64_t n, Read<uint64_t>("array length"));
  if (!IsKnownValueType(et)) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF unknown array element type ", et));
  }
  v.element_type = static_cast<GgufValueType>(et);
  if (n > left() / MinEncodedBytes(v.element_type)) {
    return absl::DataLossError(absl::StrCat(
        "GGUF truncated: array of ", n, " elements at offset ", pos_,
        " cannot fit in the ", left(), " bytes left"));
  }
  // An element takes a GgufValue here (~100 bytes) where a u8 takes one
  // byte in the file: the elements of all arrays are bounded together.
  if (n > kMaxArrayElements - array_elements_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF metadata arrays hold more than ", kMaxArrayElements,
        " elements together (an array of ", n, " at offset ", pos_, ")"));
  }
  array_elements_ += n;
  v.array.reserve(n);
  for (uint64_t e = 0; e < n; ++e) {
    ASSIGN_OR_RETURN(GgufValue elem, ReadValue(et, depth + 1));
    v.array.push_back(std::move(elem));
  }
  return absl::OkStatus();
}

absl::StatusOr<GgufValue> GgufFile::Parser::ReadValue(uint32_t raw_type,
                                                      int depth) {
  if (!IsKnownValueType(raw_type)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "GGUF unknown metadata value type ", raw_type, " at offset ", pos_));
  }
  GgufValue v;
  v.type = static_cast<GgufValueType>(raw_type);
  if (v.type == GgufValueType::kArray) {
    RETURN_IF_ERROR(ReadArray(v, depth));
  } else {
    RETURN_IF_ERROR(ReadScalar(v));
  }
  return v;
}

namespace {

// A tensor info as read, before its data is placed in the file.
struct RawTensorInfo {
  GgufTensor tensor;
  uint64_t offset = 0;
  uint64_t n_bytes = 0;
};

}  // namespace

absl::StatusOr<uint64_t> GgufFile::ParseMetadata(Parser& p, uint64_t n_kv) {
  const std::string& path = file_->path();
  for (uint64_t k = 0; k < n_kv; ++k) {
    ASSIGN_OR_RETURN(std::string key, p.ReadString("metadata key"));
    ASSIGN_OR_RETURN(uint32_t type, p.Read<uint32_t>("metadata type"));
    ASSIGN_OR_RETURN(GgufValue value, p.ReadValue(type, 0));
    if (!metadata_.emplace(key, std::move(value)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": duplicate GGUF metadata key '", key, "'"));
    }
  }
  uint64_t alignment = kDefaultAlignment;
  if (FindValue("general.alignment") != nullptr) {
    ASSIGN_OR_RETURN(alignment, GetUint("general.alignment"));
    if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": general.alignment ", alignment, " is not a power of two"));
    }
  }
  return alignment;
}

namespace {

absl::StatusOr<RawTensorInfo> ParseTensorInfo(GgufFile::Parser& p,
                                              const std::string& path,
                                              uint64_t alignment) {
  RawTensorInfo info;
  GgufTensor& tensor = info.tensor;
  ASSIGN_OR_RETURN(tensor.name, p.ReadString("tensor name"));
  ASSIGN_OR_RETURN(uint32_t n_dims, p.Read<uint32_t>("tensor n_dims"));
  if (n_dims == 0 || n_dims > kMaxDims) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": tensor '", tensor.name, "' has ", n_dims, " dims (1..4)"));
  }
  uint64_t n_values = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    ASSIGN_OR_RETURN(uint64_t ne, p.Read<uint64_t>("tensor dim"));
    // 2^40 values bounds every product below and any model this runs
    // (divided, not multiplied: the product itself could wrap).
    if (ne == 0 || ne > (uint64_t{1} << 40) / n_values) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensor '", tensor.name, "' has a bad dim ", ne));
    }
    n_values *= ne;
    tensor.dims.push_back(ne);
  }
  tensor.n_values = n_values;
  ASSIGN_OR_RETURN(uint32_t raw_type, p.Read<uint32_t>("tensor type"));
  const GgmlTypeTraits* traits = FindGgmlType(raw_type);
  if (traits == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": tensor '", tensor.name,
                     "' has unknown or unsupported ggml type ", raw_type));
  }
  tensor.type = static_cast<GgmlType>(raw_type);
  if (tensor.dims[0] % traits->block_values != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": tensor '", tensor.name, "' row of ", tensor.dims[0],
        " values is not whole ", traits->name, " blocks"));
  }
  info.n_bytes = n_values / traits->block_values * traits->block_bytes;
  ASSIGN_OR_RETURN(info.offset, p.Read<uint64_t>("tensor offset"));
  if (info.offset % alignment != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": tensor '", tensor.name, "' offset ",
                     info.offset, " is not aligned to ", alignment));
  }
  return info;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::Open(
    const std::string& path) {
  absl::StatusOr<std::unique_ptr<GgufFile>> file = ParseFile(path);
  // The parser's own errors do not know the file; every error names it.
  if (!file.ok() && !absl::StartsWith(file.status().message(), path)) {
    return absl::Status(file.status().code(),
                        absl::StrCat(path, ": ", file.status().message()));
  }
  return file;
}

absl::StatusOr<std::unique_ptr<GgufFile>> GgufFile::ParseFile(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> mapped, MappedFile::Open(path));
  std::unique_ptr<GgufFile> file(new GgufFile(std::move(mapped)));
  const absl::Span<const uint8_t> bytes = file->file_->bytes();
  Parser p(bytes);

  ASSIGN_OR_RETURN(uint32_t magic, p.Read<uint32_t>("magic"));
  if (magic != kMagic) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a GGUF file (magic 0x", absl::Hex(magic), ")"));
  }
  ASSIGN_OR_RETURN(file->version_, p.Read<uint32_t>("version"));
  if (file->version_ != 2 && file->version_ != 3) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": GGUF version ", file->version_, " unsupported (2 or 3)"));
  }
  ASSIGN_OR_RETURN(uint64_t n_tensors, p.Read<uint64_t>("tensor count"));
  ASSIGN_OR_RETURN(uint64_t n_kv, p.Read<uint64_t>("metadata count"));
  // Each pair takes >= 13 bytes and each tensor info >= 24.
  if (n_kv > p.left() / 13 || n_tensors > p.left() / 24) {
    return absl::DataLossError(absl::StrCat(
        path, ": GGUF truncated: ", n_kv, " metadata pairs and ", n_tensors,
        " tensors cannot fit in ", p.left(), " bytes"));
  }
  ASSIGN_OR_RETURN(const uint64_t alignment, file->ParseMetadata(p, n_kv));
  std::vector<RawTensorInfo> infos;
  infos.reserve(n_tensors);
  for (uint64_t t = 0; t < n_tensors; ++t) {
    ASSIGN_OR_RETURN(RawTensorInfo info, ParseTensorInfo(p, path, alignment));
    infos.push_back(std::move(info));
  }

  const uint64_t data_start = (p.pos() + alignment - 1) / alignment * alignment;
  const uint64_t size = bytes.size();
  for (RawTensorInfo& info : infos) {
    GgufTensor& tensor = info.tensor;
    if (data_start > size || info.offset > size - data_start ||
        info.n_bytes > size - data_start - info.offset) {
      return absl::DataLossError(absl::StrCat(
          path, ": tensor '", tensor.name, "' (", info.n_bytes,
          " bytes at data offset ", info.offset, ") lies past the end of the ",
          size, "-byte file"));
    }
    tensor.data = bytes.subspan(data_start + info.offset, info.n_bytes);
    if (!file->tensor_index_.emplace(tensor.name, file->tensors_.size())
             .second) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": duplicate tensor name '", tensor.name, "'"));
    }
    file->tensors_.push_back(std::move(tensor));
  }
  // Tensors share no bytes: each is read and dequantized on its own, so a
  // file whose tensors all name the same bytes would cost the memory of a
  // model many times its size.
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // [offset, end)
  ranges.reserve(infos.size());
  for (const RawTensorInfo& info : infos) {
    if (info.n_bytes > 0) ranges.emplace_back(info.offset, info.offset + info.n_bytes);
  }
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].first < ranges[i - 1].second) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": tensors overlap (data bytes ", ranges[i - 1].first, "..",
          ranges[i - 1].second, " and ", ranges[i].first, "..", ranges[i].second, ")"));
    }
  }
  return file;
}

const GgufTensor* GgufFile::FindTensor(absl::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::FindValue(absl::string_view key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {

absl::StatusOr<uint64_t> AsUint(const GgufValue& v, absl::string_view key) {
  switch (v.type) {
    case GgufValueType::kUint8:
    case GgufValueType::kUint16:
    case GgufValueType::kUint32:
    case GgufValueType::kUint64:
      return v.u;
    case GgufValueType::kInt8:
    case GgufValueType::kInt16:
    case GgufValueType::kInt32:
    case GgufValueType::kInt64:
      if (v.i >= 0) return static_cast<uint64_t>(v.i);
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF key ", key, " is negative: ", v.i));
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF key ", key, " is not an integer"));
  }
}

absl::StatusOr<double> AsFloat(const GgufValue& v, absl::string_view key) {
  switch (v.type) {
    case GgufValueType::kFloat32:
    case GgufValueType::kFloat64:
      return v.f;
    case GgufValueType::kInt8:
    case GgufValueType::kInt16:
    case GgufValueType::kInt32:
    case GgufValueType::kInt64:
      return static_cast<double>(v.i);
    case GgufValueType::kUint8:
    case GgufValueType::kUint16:
    case GgufValueType::kUint32:
    case GgufValueType::kUint64:
      return static_cast<double>(v.u);
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("GGUF key ", key, " is not a number"));
  }
}

}  // namespace

#define KVTIER_GGUF_FIND_(v, key)                                         \
  const GgufValue* v = FindValue(key);                                    \
  if (v == nullptr) {                                                     \
    return absl::NotFoundError(absl::StrCat("GGUF key ", key, " absent")); \
  }

absl::StatusOr<std::string> GgufFile::GetString(absl::string_view key) const {
  KVTIER_GGUF_FIND_(v, key);
  if (v->type != GgufValueType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF key ", key, " is not a string"));
  }
  return v->s;
}

absl::StatusOr<uint64_t> GgufFile::GetUint(absl::string_view key) const {
  KVTIER_GGUF_FIND_(v, key);
  return AsUint(*v, key);
}

absl::StatusOr<double> GgufFile::GetFloat(absl::string_view key) const {
  KVTIER_GGUF_FIND_(v, key);
  return AsFloat(*v, key);
}

absl::StatusOr<bool> GgufFile::GetBool(absl::string_view key) const {
  KVTIER_GGUF_FIND_(v, key);
  if (v->type != GgufValueType::kBool) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF key ", key, " is not a bool"));
  }
  return v->u != 0;
}

absl::StatusOr<std::vector<std::string>> GgufFile::GetStringArray(
    absl::string_view key) const {
  KVTIER_GGUF_FIND_(v, key);
  if (v->type != GgufValueType::kArray ||
      v->element_type != GgufValueType::kString) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF key ", key, " is not an array of strings"));
  }
  std::vector<std::string> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) out.push_back(e.s);
  return out;
}

absl::StatusOr<std::vector<float>> GgufFile::GetFloatArray(
    absl::string_view key) const {
  KVTIER_GGUF_FIND_(v, key);
  if (v->type != GgufValueType::kArray) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF key ", key, " is not an array"));
  }
  std::vector<float> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) {
    ASSIGN_OR_RETURN(double f, AsFloat(e, key));
    out.push_back(static_cast<float>(f));
  }
  return out;
}

absl::StatusOr<std::vector<int64_t>> GgufFile::GetIntArray(
    absl::string_view key) const {
  KVTIER_GGUF_FIND_(v, key);
  if (v->type != GgufValueType::kArray) {
    return absl::InvalidArgumentError(
        absl::StrCat("GGUF key ", key, " is not an array"));
  }
  std::vector<int64_t> out;
  out.reserve(v->array.size());
  for (const GgufValue& e : v->array) {
    switch (e.type) {
      case GgufValueType::kInt8:
      case GgufValueType::kInt16:
      case GgufValueType::kInt32:
      case GgufValueType::kInt64:
        out.push_back(e.i);
        break;
      case GgufValueType::kUint8:
      case GgufValueType::kUint16:
      case GgufValueType::kUint32:
        out.push_back(static_cast<int64_t>(e.u));
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("GGUF key ", key, " holds a non-integer element"));
    }
  }
  return out;
}

#undef KVTIER_GGUF_FIND_

absl::StatusOr<std::vector<float>> GgufFile::ReadTensor(
    absl::string_view name, absl::Span<const uint64_t> want_dims) const {
  const GgufTensor* t = FindTensor(name);
  if (t == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat(file_->path(), ": tensor '", name, "' is missing"));
  }
  if (absl::Span<const uint64_t>(t->dims) != want_dims) {
    return absl::InvalidArgumentError(absl::StrCat(
        file_->path(), ": tensor '", name, "' has dims [",
        absl::StrJoin(t->dims, ", "), "], want [",
        absl::StrJoin(want_dims, ", "), "]"));
  }
  std::vector<float> out(t->n_values);
  RETURN_IF_ERROR(DequantizeToFloat(t->type, t->data, absl::MakeSpan(out)));
  return out;
}

}  // namespace kvtier::model
