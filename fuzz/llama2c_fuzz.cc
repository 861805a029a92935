// llama2.c checkpoints and tokenizer files, fuzzed. The first byte sets the
// vocabulary size the tokenizer file is read with.
#include <cstddef>
#include <cstdint>

#include "fuzz/fuzz_util.h"
#include "worker/model/loader/llama2c.h"
#include "worker/model/tokenizer/score_bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvtier::model;
  if (size < 1) return 0;
  const std::string path = kvtier::fuzz::WriteScratchFile(data + 1, size - 1);
  LoadLlama2cCheckpoint(path).status().IgnoreError();
  absl::StatusOr<std::unique_ptr<ScoreBpeTokenizer>> tokenizer =
      ScoreBpeTokenizer::LoadLlama2c(path, 1 + data[0] % 64);
  if (tokenizer.ok()) {
    (*tokenizer)
        ->Encode(absl::string_view(reinterpret_cast<const char*>(data), size), true)
        .status()
        .IgnoreError();
  }
  return 0;
}
