// ScoreBpeTokenizer: the greedy, score-ordered BPE of llama2.c (run.c's
// encode/decode) and of SentencePiece vocabularies stored in GGUF.
//
// Encoding: a dummy-prefix space when the text is non-empty, one token per
// UTF-8 code point (or one <0xXX> byte token per byte when the code point
// has none), then repeatedly merge the adjacent pair whose concatenation is
// a token with the highest score (leftmost on ties) until none is.
//
// Two vocabulary conventions:
//   kLlama2c:       spaces are ' ' (llama2.c's export rewrote U+2581), and
//                   decoding drops single non-printable bytes exactly like
//                   run.c's safe_printf, so output matches llama2.c.
//   kSentencePiece: spaces are U+2581 in the vocabulary; encoding maps ' '
//                   to it and decoding maps it back.
// Both strip the leading space of the first token after BOS.
#ifndef KVTIER_WORKER_MODEL_TOKENIZER_SCORE_BPE_TOKENIZER_H_
#define KVTIER_WORKER_MODEL_TOKENIZER_SCORE_BPE_TOKENIZER_H_

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace kvtier::model {

class ScoreBpeTokenizer : public Tokenizer {
 public:
  enum class Convention { kLlama2c, kSentencePiece };

  struct Vocab {
    std::vector<std::string> pieces;
    std::vector<float> scores;  // same length as pieces
    int bos_id = 1;
    int eos_id = 2;
  };

  // INVALID_ARGUMENT on an empty vocabulary, mismatched lengths or special
  // ids out of range.
  static absl::StatusOr<std::unique_ptr<ScoreBpeTokenizer>> Create(
      Vocab vocab, Convention convention);

  // Reads llama2.c's tokenizer file (see worker/model/README or
  // worker/model/testdata/stories260K/README.md) holding `vocab_size` tokens.
  // DATA_LOSS when it ends early, INVALID_ARGUMENT on trailing bytes or
  // negative/oversized lengths.
  static absl::StatusOr<std::unique_ptr<ScoreBpeTokenizer>> LoadLlama2c(
      const std::string& path, int vocab_size);

  int vocab_size() const override { return vocab_.pieces.size(); }
  int bos_id() const override { return vocab_.bos_id; }
  int eos_id() const override { return vocab_.eos_id; }
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text,
                                          bool add_bos) const override;
  std::string Decode(int prev_token, int token) const override;

 private:
  ScoreBpeTokenizer(Vocab vocab, Convention convention);
  int Lookup(absl::string_view piece) const;

  const Vocab vocab_;
  const Convention convention_;
  absl::flat_hash_map<std::string, int> ids_;
  std::array<int, 256> byte_ids_;  // -1 where the vocabulary lacks <0xXX>
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_TOKENIZER_SCORE_BPE_TOKENIZER_H_
