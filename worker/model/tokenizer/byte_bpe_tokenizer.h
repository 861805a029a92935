// ByteBpeTokenizer: GPT-2 style byte-level BPE (GGUF tokenizer.ggml.model
// "gpt2"), as llama.cpp runs it.
//
// Encoding:
//   1. Special tokens (token types CONTROL = 3 and USER_DEFINED = 4) are
//      matched literally, longest first, and emitted as themselves.
//   2. The text between them is pre-tokenized. For pre "smollm" (and the
//      starcoder family) digits are split off one by one first, as
//      llama.cpp's "\p{N}" pass does; then GPT-2's pattern
//        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|
//        \s+(?!\S)|\s+
//      splits words. The Unicode classes are approximated without tables:
//      ASCII is exact; other code points are whitespace if in the Unicode
//      White_Space set, otherwise punctuation/symbols for the Latin-1
//      symbols, U+2000-U+2BFF, U+3000-U+303F and U+1F000-U+1FAFF, and
//      letters everywhere else (no non-ASCII digits).
//   3. Each word's bytes map to GPT-2's printable code points; ranked merges
//      (lowest rank first, every occurrence, left to right) join symbols;
//      each symbol is a token.
// Decoding maps code points back to bytes; control tokens decode to "".
#ifndef KVTIER_WORKER_MODEL_TOKENIZER_BYTE_BPE_TOKENIZER_H_
#define KVTIER_WORKER_MODEL_TOKENIZER_BYTE_BPE_TOKENIZER_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "worker/model/tokenizer/tokenizer.h"

namespace kvtier::model {

class ByteBpeTokenizer : public Tokenizer {
 public:
  struct Vocab {
    std::vector<std::string> tokens;
    std::vector<int64_t> token_types;  // empty, or one per token
    std::vector<std::string> merges;   // "left right", by rank
    std::string pre;                   // tokenizer.ggml.pre
    int bos_id = -1;
    int eos_id = -1;
    int unk_id = -1;  // for bytes with no token; -1: such text is an error
  };

  // INVALID_ARGUMENT on an empty vocabulary, a malformed merge or special
  // ids out of range.
  static absl::StatusOr<std::unique_ptr<ByteBpeTokenizer>> Create(Vocab vocab);

  int vocab_size() const override { return vocab_.tokens.size(); }
  int bos_id() const override { return vocab_.bos_id; }
  int eos_id() const override { return vocab_.eos_id; }
  absl::StatusOr<std::vector<int>> Encode(absl::string_view text,
                                          bool add_bos) const override;
  std::string Decode(int prev_token, int token) const override;

  // Pre-tokenization alone (exposed for tests).
  std::vector<std::string> PreTokenize(absl::string_view text) const;

 private:
  explicit ByteBpeTokenizer(Vocab vocab);
  absl::Status Init();
  absl::Status EncodeWord(absl::string_view word, std::vector<int>& out) const;

  const Vocab vocab_;
  bool split_digits_ = false;
  absl::flat_hash_map<std::string, int> ids_;
  absl::flat_hash_map<std::string, int> merge_rank_;  // "left right" -> rank
  std::vector<std::string> specials_;  // longest first
  std::array<std::string, 256> byte_to_unicode_;
  absl::flat_hash_map<uint32_t, uint8_t> unicode_to_byte_;
};

}  // namespace kvtier::model

#endif  // KVTIER_WORKER_MODEL_TOKENIZER_BYTE_BPE_TOKENIZER_H_
