#include "worker/model/loader/model_loader.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"
#include "worker/model/loader/gguf.h"
#include "worker/model/loader/gguf_model.h"
#include "worker/model/loader/llama2c.h"
#include "worker/model/tokenizer/score_bpe_tokenizer.h"

namespace kvtier::model {
namespace {

absl::StatusOr<bool> IsGguf(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  if (file->bytes().size() < 4) return false;
  uint32_t magic;
  std::memcpy(&magic, file->bytes().data(), 4);
  return magic == GgufFile::kMagic;
}

}  // namespace

absl::StatusOr<LoadedModel> LoadModel(const std::string& model_path,
                                      const std::string& tokenizer_path) {
  LoadedModel m;
  ASSIGN_OR_RETURN(bool gguf, IsGguf(model_path));
  if (gguf) {
    if (!tokenizer_path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          model_path, " is GGUF and carries its own tokenizer; drop ",
          tokenizer_path));
    }
    m.format = "gguf";
    ASSIGN_OR_RETURN(std::unique_ptr<GgufFile> file,
                     GgufFile::Open(model_path));
    ASSIGN_OR_RETURN(m.weights, LoadGgufWeights(*file));
    ASSIGN_OR_RETURN(GgufTokenizerInfo tok, LoadGgufTokenizer(*file));
    m.tokenizer = std::move(tok.tokenizer);
    m.add_bos = tok.add_bos;
    m.stop_tokens = std::move(tok.stop_tokens);
  } else {
    // Not GGUF: a llama2.c checkpoint, or no model at all (an empty or
    // damaged file says so rather than asking for a tokenizer).
    absl::StatusOr<ModelWeights> weights = LoadLlama2cCheckpoint(model_path);
    if (!weights.ok()) {
      return absl::Status(weights.status().code(),
                          absl::StrCat("not a GGUF model (no GGUF magic) and not a llama2.c "
                                       "checkpoint: ",
                                       weights.status().message()));
    }
    if (tokenizer_path.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          model_path, " is a llama2.c checkpoint: it needs a tokenizer file"));
    }
    m.format = "llama2c";
    m.weights = *std::move(weights);
    ASSIGN_OR_RETURN(m.tokenizer,
                     ScoreBpeTokenizer::LoadLlama2c(
                         tokenizer_path, m.weights.config.vocab_size));
    m.add_bos = true;
    // run.c ends generation when the model emits BOS.
    m.stop_tokens = {m.tokenizer->bos_id()};
  }
  if (m.tokenizer->vocab_size() != m.weights.config.vocab_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "tokenizer has ", m.tokenizer->vocab_size(), " tokens, the model ",
        m.weights.config.vocab_size));
  }
  return m;
}

}  // namespace kvtier::model
