#include "worker/model/tokenizer/score_bpe_tokenizer.h"

#include <cctype>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "common/mapped_file.h"
#include "common/status_macros.h"

namespace kvtier::model {
namespace {

constexpr absl::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581

// "<0xAB>" -> 0xAB; -1 for anything else.
int ParseByteToken(absl::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') {
    return -1;
  }
  int value = 0;
  for (char c : piece.substr(3, 2)) {
    value <<= 4;
    if (c >= '0' && c <= '9') {
      value |= c - '0';
    } else if (c >= 'A' && c <= 'F') {
      value |= c - 'A' + 10;
    } else if (c >= 'a' && c <= 'f') {
      value |= c - 'a' + 10;
    } else {
      return -1;
    }
  }
  return value;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ScoreBpeTokenizer>> ScoreBpeTokenizer::Create(
    Vocab vocab, Convention convention) {
  const int n = vocab.pieces.size();
  if (n == 0 || vocab.scores.size() != vocab.pieces.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BPE vocabulary of ", n, " pieces and ", vocab.scores.size(),
        " scores"));
  }
  // Merges go to the highest score: a NaN never wins and turns merges off
  // without a word, +inf always does. (-inf, a piece never merged into, is
  // allowed.)
  for (int i = 0; i < n; ++i) {
    if (!(vocab.scores[i] < std::numeric_limits<float>::infinity())) {
      return absl::InvalidArgumentError(
          absl::StrCat("BPE piece ", i, " has score ", vocab.scores[i]));
    }
  }
  if (vocab.bos_id < -1 || vocab.bos_id >= n || vocab.eos_id < -1 ||
      vocab.eos_id >= n) {
    return absl::InvalidArgumentError(absl::StrCat(
        "BOS ", vocab.bos_id, " / EOS ", vocab.eos_id, " outside a ", n,
        "-token vocabulary"));
  }
  return std::unique_ptr<ScoreBpeTokenizer>(
      new ScoreBpeTokenizer(std::move(vocab), convention));
}

ScoreBpeTokenizer::ScoreBpeTokenizer(Vocab vocab, Convention convention)
    : vocab_(std::move(vocab)), convention_(convention) {
  byte_ids_.fill(-1);
  for (int id = 0; id < static_cast<int>(vocab_.pieces.size()); ++id) {
    ids_.emplace(vocab_.pieces[id], id);  // the first of duplicates wins
    const int byte = ParseByteToken(vocab_.pieces[id]);
    if (byte >= 0 && byte_ids_[byte] < 0) byte_ids_[byte] = id;
  }
}

absl::StatusOr<std::unique_ptr<ScoreBpeTokenizer>>
ScoreBpeTokenizer::LoadLlama2c(const std::string& path, int vocab_size) {
  if (vocab_size <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("tokenizer vocab_size ", vocab_size, " must be > 0"));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<MappedFile> file, MappedFile::Open(path));
  absl::Span<const uint8_t> bytes = file->bytes();
  size_t pos = 0;
  auto read_i32 = [&](absl::string_view what) -> absl::StatusOr<int32_t> {
    if (bytes.size() - pos < 4) {
      return absl::DataLossError(absl::StrCat(
          path, ": tokenizer truncated reading ", what, " at offset ", pos));
    }
    int32_t v;
    std::memcpy(&v, bytes.data() + pos, 4);
    pos += 4;
    return v;
  };
  ASSIGN_OR_RETURN(int32_t max_len, read_i32("max_token_length"));
  if (max_len <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": max_token_length ", max_len, " must be > 0"));
  }
  Vocab vocab;
  vocab.pieces.reserve(vocab_size);
  vocab.scores.reserve(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    ASSIGN_OR_RETURN(int32_t score_bits, read_i32("score"));
    float score;
    std::memcpy(&score, &score_bits, 4);
    ASSIGN_OR_RETURN(int32_t len, read_i32("token length"));
    if (len < 0 || len > max_len) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": token ", i, " length ", len, " outside [0, ", max_len, "]"));
    }
    if (bytes.size() - pos < static_cast<size_t>(len)) {
      return absl::DataLossError(
          absl::StrCat(path, ": tokenizer truncated in token ", i));
    }
    vocab.pieces.emplace_back(reinterpret_cast<const char*>(bytes.data() + pos),
                              len);
    vocab.scores.push_back(score);
    pos += len;
  }
  if (pos != bytes.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": ", bytes.size() - pos, " bytes follow the ", vocab_size,
        " tokens the model expects (is it the model's tokenizer?)"));
  }
  return Create(std::move(vocab), Convention::kLlama2c);
}

int ScoreBpeTokenizer::Lookup(absl::string_view piece) const {
  auto it = ids_.find(piece);
  return it == ids_.end() ? -1 : it->second;
}

absl::StatusOr<std::vector<int>> ScoreBpeTokenizer::Encode(
    absl::string_view text, bool add_bos) const {
  std::vector<int> tokens;
  if (add_bos && vocab_.bos_id >= 0) tokens.push_back(vocab_.bos_id);
  if (text.empty()) return tokens;

  std::string normalized = absl::StrCat(" ", text);
  if (convention_ == Convention::kSentencePiece) {
    normalized = absl::StrReplaceAll(normalized, {{" ", kSpmSpace}});
  }
  // One token per code point; byte tokens where a code point has none.
  std::vector<int> seq;
  for (size_t i = 0; i < normalized.size();) {
    size_t len = 1;
    while (i + len < normalized.size() && len < 4 &&
           (static_cast<uint8_t>(normalized[i + len]) & 0xC0) == 0x80) {
      ++len;
    }
    const absl::string_view cp(normalized.data() + i, len);
    const int id = Lookup(cp);
    if (id >= 0) {
      seq.push_back(id);
    } else {
      for (char c : cp) {
        const int byte_id = byte_ids_[static_cast<uint8_t>(c)];
        if (byte_id < 0) {
          return absl::InvalidArgumentError(absl::StrFormat(
              "byte 0x%02X at offset %d has no token", static_cast<uint8_t>(c),
              i));
        }
        seq.push_back(byte_id);
      }
    }
    i += len;
  }
  // Greedy merges by score, leftmost best pair first. pair[i] is the
  // token of seq[i] + seq[i + 1] (or -1); only the neighbours of a merge
  // change, so each merge costs one scan instead of a lookup per pair.
  auto pair_id = [&](size_t i) {
    return Lookup(absl::StrCat(vocab_.pieces[seq[i]], vocab_.pieces[seq[i + 1]]));
  };
  std::vector<int> pair(seq.empty() ? 0 : seq.size() - 1);
  for (size_t i = 0; i < pair.size(); ++i) pair[i] = pair_id(i);
  while (true) {
    float best_score = -1e10f;
    int best_id = -1;
    size_t best_idx = 0;
    for (size_t i = 0; i < pair.size(); ++i) {
      if (pair[i] >= 0 && vocab_.scores[pair[i]] > best_score) {
        best_score = vocab_.scores[pair[i]];
        best_id = pair[i];
        best_idx = i;
      }
    }
    if (best_id < 0) break;
    seq[best_idx] = best_id;
    seq.erase(seq.begin() + best_idx + 1);
    pair.erase(pair.begin() + best_idx);
    if (best_idx < pair.size()) pair[best_idx] = pair_id(best_idx);
    if (best_idx > 0) pair[best_idx - 1] = pair_id(best_idx - 1);
  }
  tokens.insert(tokens.end(), seq.begin(), seq.end());
  return tokens;
}

std::string ScoreBpeTokenizer::Decode(int prev_token, int token) const {
  if (token < 0 || token >= vocab_size()) return "";
  std::string piece = vocab_.pieces[token];
  if (convention_ == Convention::kSentencePiece) {
    piece = absl::StrReplaceAll(piece, {{kSpmSpace, " "}});
  }
  if (prev_token == vocab_.bos_id && !piece.empty() && piece[0] == ' ') {
    piece.erase(0, 1);
  }
  const int byte = ParseByteToken(piece);
  if (byte >= 0) piece = std::string(1, static_cast<char>(byte));
  if (convention_ == Convention::kLlama2c && piece.size() == 1) {
    const unsigned char c = piece[0];
    if (!(std::isprint(c) || std::isspace(c))) return "";
  }
  return piece;
}

}  // namespace kvtier::model
