#include "worker/model/loader/gguf_test_writer.h"

#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvtier::model {

std::string EncodeU32(uint32_t v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}

std::string EncodeU64(uint64_t v) {
  std::string s(8, '\0');
  std::memcpy(s.data(), &v, 8);
  return s;
}

std::string EncodeF32(float v) {
  std::string s(4, '\0');
  std::memcpy(s.data(), &v, 4);
  return s;
}

std::string EncodeGgufString(const std::string& s) {
  return EncodeU64(s.size()) + s;
}

std::string UniqueTempPath(const std::string& name) {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  return absl::StrCat(::testing::TempDir(), "/", getpid(), "_",
                      info != nullptr ? info->name() : "none", "_", name);
}

uint16_t FloatToFp16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  const uint16_t sign = (bits >> 16) & 0x8000;
  const int exp = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
  const uint32_t mant = bits & 0x7fffff;
  if ((bits & 0x7fffffff) == 0) return sign;
  if (exp <= 0) {  // subnormal half (tests use exactly representable ones)
    const uint32_t m = (mant | 0x800000) >> (14 - exp);
    return sign | static_cast<uint16_t>(m);
  }
  return sign | static_cast<uint16_t>(exp << 10) |
         static_cast<uint16_t>(mant >> 13);
}

void GgufTestWriter::Key(const std::string& key, uint32_t type) {
  ++n_kv_;
  kv_ += EncodeGgufString(key) + EncodeU32(type);
}

void GgufTestWriter::AddString(const std::string& key,
                               const std::string& value) {
  Key(key, 8);
  kv_ += EncodeGgufString(value);
}

void GgufTestWriter::AddUint32(const std::string& key, uint32_t value) {
  Key(key, 4);
  kv_ += EncodeU32(value);
}

void GgufTestWriter::AddInt32(const std::string& key, int32_t value) {
  Key(key, 5);
  kv_ += EncodeU32(static_cast<uint32_t>(value));
}

void GgufTestWriter::AddFloat32(const std::string& key, float value) {
  Key(key, 6);
  kv_ += EncodeF32(value);
}

void GgufTestWriter::AddBool(const std::string& key, bool value) {
  Key(key, 7);
  kv_ += std::string(1, value ? 1 : 0);
}

void GgufTestWriter::AddStringArray(const std::string& key,
                                    const std::vector<std::string>& values) {
  Key(key, 9);
  kv_ += EncodeU32(8) + EncodeU64(values.size());
  for (const std::string& v : values) kv_ += EncodeGgufString(v);
}

void GgufTestWriter::AddFloat32Array(const std::string& key,
                                     const std::vector<float>& values) {
  Key(key, 9);
  kv_ += EncodeU32(6) + EncodeU64(values.size());
  for (float v : values) kv_ += EncodeF32(v);
}

void GgufTestWriter::AddInt32Array(const std::string& key,
                                   const std::vector<int32_t>& values) {
  Key(key, 9);
  kv_ += EncodeU32(5) + EncodeU64(values.size());
  for (int32_t v : values) kv_ += EncodeU32(static_cast<uint32_t>(v));
}

void GgufTestWriter::AddRaw(const std::string& key, uint32_t type,
                            const std::string& bytes) {
  Key(key, type);
  kv_ += bytes;
}

int GgufTestWriter::AddTensor(const std::string& name, uint32_t type,
                              const std::vector<uint64_t>& dims,
                              const std::string& data) {
  tensors_.push_back(Tensor{name, type, dims, data});
  return tensors_.size() - 1;
}

void GgufTestWriter::AddF32Tensor(const std::string& name,
                                  const std::vector<uint64_t>& dims,
                                  const std::vector<float>& values) {
  std::string data(values.size() * 4, '\0');
  std::memcpy(data.data(), values.data(), data.size());
  AddTensor(name, 0, dims, data);
}

void GgufTestWriter::ForceOffset(int tensor, uint64_t offset) {
  tensors_[tensor].forced = true;
  tensors_[tensor].offset = offset;
}

std::string GgufTestWriter::Build() const {
  std::string out = EncodeU32(magic) + EncodeU32(version) +
                    EncodeU64(tensors_.size()) + EncodeU64(n_kv_) + kv_;
  std::string data;
  for (const Tensor& t : tensors_) {
    while (data.size() % alignment != 0) data += '\0';
    const uint64_t offset = t.forced ? t.offset : data.size();
    data += t.data;
    out += EncodeGgufString(t.name) + EncodeU32(t.dims.size());
    for (uint64_t d : t.dims) out += EncodeU64(d);
    out += EncodeU32(t.type) + EncodeU64(offset);
  }
  while (out.size() % alignment != 0) out += '\0';
  return out + data;
}

}  // namespace kvtier::model
