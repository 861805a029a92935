// GgufTestWriter: builds GGUF bytes for tests, including deliberately
// malformed ones (any version, magic, type or offset can be forced).
#ifndef KVTIER_WORKER_MODEL_LOADER_GGUF_TEST_WRITER_H_
#define KVTIER_WORKER_MODEL_LOADER_GGUF_TEST_WRITER_H_

#include <cstdint>
#include <string>
#include <vector>

namespace kvtier::model {

class GgufTestWriter {
 public:
  uint32_t magic = 0x46554747;
  uint32_t version = 3;
  uint32_t alignment = 32;  // used for layout; written only via AddUint32

  void AddString(const std::string& key, const std::string& value);
  void AddUint32(const std::string& key, uint32_t value);
  void AddInt32(const std::string& key, int32_t value);
  void AddFloat32(const std::string& key, float value);
  void AddBool(const std::string& key, bool value);
  void AddStringArray(const std::string& key,
                      const std::vector<std::string>& values);
  void AddFloat32Array(const std::string& key, const std::vector<float>& v);
  void AddInt32Array(const std::string& key, const std::vector<int32_t>& v);
  // A pair with an arbitrary value type and raw value bytes.
  void AddRaw(const std::string& key, uint32_t type, const std::string& bytes);

  // Adds a tensor whose data is `data` (already encoded in `type`); dims
  // ne[0] first. Returns its index for ForceOffset.
  int AddTensor(const std::string& name, uint32_t type,
                const std::vector<uint64_t>& dims, const std::string& data);
  void AddF32Tensor(const std::string& name, const std::vector<uint64_t>& dims,
                    const std::vector<float>& values);
  // Writes `offset` as the tensor's data offset instead of its real one.
  void ForceOffset(int tensor, uint64_t offset);

  std::string Build() const;

 private:
  struct Tensor {
    std::string name;
    uint32_t type;
    std::vector<uint64_t> dims;
    std::string data;
    bool forced = false;
    uint64_t offset = 0;
  };
  void Key(const std::string& key, uint32_t type);

  uint64_t n_kv_ = 0;
  std::string kv_;
  std::vector<Tensor> tensors_;
};

// Little-endian encoders shared by the tests.
std::string EncodeU32(uint32_t v);
std::string EncodeU64(uint64_t v);
std::string EncodeF32(float v);
std::string EncodeGgufString(const std::string& s);
uint16_t FloatToFp16(float f);  // exact for values fp16 represents

// A path under the test temp dir that is unique to the running test and
// process, so tests run in parallel by ctest never share files.
std::string UniqueTempPath(const std::string& name);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_LOADER_GGUF_TEST_WRITER_H_
