// LoadModel: opens a model file of either supported format, with its
// tokenizer and generation defaults.
//
// The format is told by content, not name: a file starting with the GGUF
// magic is GGUF (and carries its tokenizer); anything else is read as a
// llama2.c checkpoint, which needs a llama2.c tokenizer file.
#ifndef KVTIER_WORKER_MODEL_LOADER_MODEL_LOADER_H_
#define KVTIER_WORKER_MODEL_LOADER_MODEL_LOADER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "worker/model/tokenizer/tokenizer.h"
#include "worker/model/weights.h"

namespace kvtier::model {

struct LoadedModel {
  std::string format;  // "gguf" or "llama2c"
  ModelWeights weights;
  std::unique_ptr<Tokenizer> tokenizer;
  bool add_bos = true;           // prepend BOS to prompts
  std::vector<int> stop_tokens;  // sampled tokens that end generation
};

// `tokenizer_path` is required for llama2.c checkpoints and rejected
// (INVALID_ARGUMENT) for GGUF. Loader errors pass through unchanged.
absl::StatusOr<LoadedModel> LoadModel(const std::string& model_path,
                                      const std::string& tokenizer_path);

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_LOADER_MODEL_LOADER_H_
