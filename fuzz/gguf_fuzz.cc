// GGUF model files: the parser (every length and count checked against the
// file), the Llama weights and the tokenizer built from its metadata, and
// every tensor read, for fuzzed files.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "worker/model/loader/gguf.h"
#include "worker/model/loader/gguf_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier::model;
  absl::StatusOr<std::unique_ptr<GgufFile>> file =
      GgufFile::Open(kvtier::fuzz::WriteScratchFile(data, size));
  if (!file.ok()) return 0;
  for (const GgufTensor& tensor : (*file)->tensors()) {
    (*file)->ReadTensor(tensor.name, tensor.dims).status().IgnoreError();
  }
  LoadGgufWeights(**file).status().IgnoreError();
  LoadGgufTokenizer(**file).status().IgnoreError();
  return 0;
}
