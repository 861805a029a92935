// Tokenizer: text <-> token ids for the model runner.
//
// Implementations: ScoreBpeTokenizer (score_bpe_tokenizer.h; llama2.c's
// tokenizer files and GGUF "llama" vocabularies) and ByteBpeTokenizer
// (byte_bpe_tokenizer.h; GGUF "gpt2" vocabularies).
//
// Thread-safety: implementations are immutable after construction.
#ifndef KVTIER_WORKER_MODEL_TOKENIZER_TOKENIZER_H_
#define KVTIER_WORKER_MODEL_TOKENIZER_TOKENIZER_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier::model {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  virtual int vocab_size() const = 0;
  // -1 when the vocabulary has no such token.
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;

  // Token ids of `text`, preceded by BOS when `add_bos`. INVALID_ARGUMENT
  // when some byte of `text` has no token.
  virtual absl::StatusOr<std::vector<int>> Encode(absl::string_view text,
                                                  bool add_bos) const = 0;

  // The bytes `token` adds to the output when it follows `prev_token`
  // (some vocabularies drop a leading space after BOS). Out-of-range ids
  // decode to "".
  virtual std::string Decode(int prev_token, int token) const = 0;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_TOKENIZER_TOKENIZER_H_
