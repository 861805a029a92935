#include "worker/model/tokenizer/byte_bpe_tokenizer.h"

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace kvtier::model {
namespace {

constexpr int64_t kTokenTypeControl = 3;
constexpr int64_t kTokenTypeUserDefined = 4;

std::string EncodeUtf8(uint32_t cp) {
  std::string out;
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return out;
}

// The code point at s[i] and its length in bytes; a malformed sequence is
// one byte whose value is returned as is.
uint32_t DecodeUtf8(absl::string_view s, size_t i, size_t* len) {
  const uint8_t b = s[i];
  int n = b < 0x80 ? 1 : (b >> 5) == 6 ? 2 : (b >> 4) == 14 ? 3
                                          : (b >> 3) == 30 ? 4 : 0;
  if (n == 0 || i + n > s.size()) {
    *len = 1;
    return b;
  }
  uint32_t cp = n == 1 ? b : n == 2 ? (b & 0x1F) : n == 3 ? (b & 0x0F)
                                                         : (b & 0x07);
  for (int k = 1; k < n; ++k) {
    const uint8_t c = s[i + k];
    if ((c & 0xC0) != 0x80) {
      *len = 1;
      return b;
    }
    cp = (cp << 6) | (c & 0x3F);
  }
  *len = n;
  return cp;
}

enum class CharClass { kSpace, kLetter, kDigit, kOther };

// See the header for the approximation of \s, \p{L} and \p{N}.
CharClass Classify(uint32_t cp) {
  if (cp < 0x80) {
    if (cp == ' ' || (cp >= 0x09 && cp <= 0x0D)) return CharClass::kSpace;
    if ((cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z')) {
      return CharClass::kLetter;
    }
    if (cp >= '0' && cp <= '9') return CharClass::kDigit;
    return CharClass::kOther;
  }
  if (cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
      (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
      cp == 0x202F || cp == 0x205F || cp == 0x3000) {
    return CharClass::kSpace;
  }
  if ((cp >= 0x80 && cp <= 0xBF) || cp == 0xD7 || cp == 0xF7 ||
      (cp >= 0x2000 && cp <= 0x2BFF) || (cp >= 0x3000 && cp <= 0x303F) ||
      (cp >= 0x1F000 && cp <= 0x1FAFF)) {
    return CharClass::kOther;
  }
  return CharClass::kLetter;
}

struct Cursor {
  absl::string_view s;
  size_t i = 0;
  uint32_t cp(size_t at, size_t* len) const { return DecodeUtf8(s, at, len); }
  CharClass cls(size_t at) const {
    size_t len;
    return Classify(DecodeUtf8(s, at, &len));
  }
  size_t next(size_t at) const {
    size_t len;
    DecodeUtf8(s, at, &len);
    return at + len;
  }
};

size_t MatchContraction(absl::string_view s, size_t i) {
  if (s[i] != '\'' || i + 1 >= s.size()) return 0;
  const char a = s[i + 1];
  if (a == 's' || a == 't' || a == 'm' || a == 'd') return 2;
  if (i + 2 < s.size()) {
    const absl::string_view two = s.substr(i + 1, 2);
    if (two == "re" || two == "ve" || two == "ll") return 3;
  }
  return 0;
}

// GPT-2's pattern over one piece (see the header).
void Gpt2Split(absl::string_view s, std::vector<std::string>& out) {
  Cursor c{s};
  size_t i = 0;
  while (i < s.size()) {
    if (size_t n = MatchContraction(s, i); n > 0) {
      out.emplace_back(s.substr(i, n));
      i += n;
      continue;
    }
    size_t j = i;
    if (s[i] == ' ' && i + 1 < s.size() && c.cls(i + 1) != CharClass::kSpace) {
      j = i + 1;  // the optional leading space of " ?X+"
    }
    const CharClass cls = c.cls(j);
    if (cls != CharClass::kSpace) {
      size_t k = j;
      while (k < s.size() && c.cls(k) == cls) k = c.next(k);
      out.emplace_back(s.substr(i, k - i));
      i = k;
      continue;
    }
    // A whitespace run [i, k); last = start of its final character.
    size_t k = i, last = i;
    while (k < s.size() && c.cls(k) == CharClass::kSpace) {
      last = k;
      k = c.next(k);
    }
    if (k < s.size() && last > i) {
      out.emplace_back(s.substr(i, last - i));  // \s+(?!\S)
      i = last;
    } else {
      out.emplace_back(s.substr(i, k - i));  // trailing run or lone \s
      i = k;
    }
  }
}

}  // namespace

absl::StatusOr<std::unique_ptr<ByteBpeTokenizer>> ByteBpeTokenizer::Create(
    Vocab vocab) {
  std::unique_ptr<ByteBpeTokenizer> t(new ByteBpeTokenizer(std::move(vocab)));
  RETURN_IF_ERROR(t->Init());
  return t;
}

ByteBpeTokenizer::ByteBpeTokenizer(Vocab vocab) : vocab_(std::move(vocab)) {}

absl::Status ByteBpeTokenizer::Init() {
  const int n = vocab_.tokens.size();
  if (n == 0 || (!vocab_.token_types.empty() &&
                 vocab_.token_types.size() != vocab_.tokens.size())) {
    return absl::InvalidArgumentError(
        absl::StrCat("byte BPE vocabulary of ", n, " tokens and ",
                     vocab_.token_types.size(), " types"));
  }
  if (vocab_.bos_id < -1 || vocab_.bos_id >= n || vocab_.eos_id < -1 ||
      vocab_.eos_id >= n) {
    return absl::InvalidArgumentError("BOS/EOS id outside the vocabulary");
  }
  split_digits_ = vocab_.pre == "smollm" || vocab_.pre == "starcoder" ||
                  vocab_.pre == "refact" || vocab_.pre == "command-r" ||
                  vocab_.pre == "codeshell" || vocab_.pre == "exaone";
  for (int id = 0; id < n; ++id) {
    ids_.emplace(vocab_.tokens[id], id);
    if (!vocab_.token_types.empty() &&
        (vocab_.token_types[id] == kTokenTypeControl ||
         vocab_.token_types[id] == kTokenTypeUserDefined) &&
        !vocab_.tokens[id].empty()) {
      specials_.push_back(vocab_.tokens[id]);
    }
  }
  std::stable_sort(specials_.begin(), specials_.end(),
                   [](const std::string& a, const std::string& b) {
                     return a.size() > b.size();
                   });
  for (size_t r = 0; r < vocab_.merges.size(); ++r) {
    const std::string& m = vocab_.merges[r];
    const size_t sp = m.find(' ');
    if (sp == std::string::npos || sp == 0 || sp + 1 == m.size() ||
        m.find(' ', sp + 1) != std::string::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("malformed merge ", r, ": '", m, "'"));
    }
    merge_rank_.emplace(m, r);  // the first (lowest) rank wins
  }
  // GPT-2's bytes_to_unicode: printable bytes stay, the rest move to 256+.
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) ||
                      (b >= 174 && b <= 255);
    const uint32_t cp = keep ? b : next++;
    byte_to_unicode_[b] = EncodeUtf8(cp);
    unicode_to_byte_[cp] = b;
  }
  if (vocab_.unk_id < -1 || vocab_.unk_id >= n) {
    return absl::InvalidArgumentError("UNK id outside the vocabulary");
  }
  return absl::OkStatus();
}

std::vector<std::string> ByteBpeTokenizer::PreTokenize(
    absl::string_view text) const {
  std::vector<std::string> out;
  if (!split_digits_) {
    Gpt2Split(text, out);
    return out;
  }
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text[i] >= '0' && text[i] <= '9') {
      Gpt2Split(text.substr(start, i - start), out);
      out.emplace_back(text.substr(i, 1));
      start = i + 1;
    }
  }
  Gpt2Split(text.substr(start), out);
  return out;
}

absl::Status ByteBpeTokenizer::EncodeWord(absl::string_view word,
                                          std::vector<int>& out) const {
  std::vector<std::string> symbols;
  for (unsigned char b : word) symbols.push_back(byte_to_unicode_[b]);
  std::string key;
  while (symbols.size() > 1) {
    int best_rank = std::numeric_limits<int>::max();
    std::string best_left, best_right;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      key = absl::StrCat(symbols[i], " ", symbols[i + 1]);
      auto it = merge_rank_.find(key);
      if (it != merge_rank_.end() && it->second < best_rank) {
        best_rank = it->second;
        best_left = symbols[i];
        best_right = symbols[i + 1];
      }
    }
    if (best_rank == std::numeric_limits<int>::max()) break;
    std::vector<std::string> merged;
    for (size_t i = 0; i < symbols.size(); ++i) {
      if (i + 1 < symbols.size() && symbols[i] == best_left &&
          symbols[i + 1] == best_right) {
        merged.push_back(symbols[i] + symbols[i + 1]);
        ++i;
      } else {
        merged.push_back(std::move(symbols[i]));
      }
    }
    symbols = std::move(merged);
  }
  for (const std::string& s : symbols) {
    auto it = ids_.find(s);
    if (it != ids_.end()) {
      out.push_back(it->second);
      continue;
    }
    // A symbol the vocabulary lacks: fall back to its characters (byte
    // tokens), and to UNK for bytes that have none.
    for (size_t i = 0; i < s.size();) {
      size_t len;
      DecodeUtf8(s, i, &len);
      auto byte_it = ids_.find(absl::string_view(s).substr(i, len));
      if (byte_it != ids_.end()) {
        out.push_back(byte_it->second);
      } else if (vocab_.unk_id >= 0) {
        out.push_back(vocab_.unk_id);
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "text holds a byte that the vocabulary cannot encode: '",
            s.substr(i, len), "'"));
      }
      i += len;
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<int>> ByteBpeTokenizer::Encode(
    absl::string_view text, bool add_bos) const {
  std::vector<int> tokens;
  if (add_bos && vocab_.bos_id >= 0) tokens.push_back(vocab_.bos_id);
  size_t start = 0;
  auto flush = [&](size_t end) -> absl::Status {
    for (const std::string& w : PreTokenize(text.substr(start, end - start))) {
      RETURN_IF_ERROR(EncodeWord(w, tokens));
    }
    return absl::OkStatus();
  };
  for (size_t i = 0; i < text.size();) {
    const std::string* special = nullptr;
    for (const std::string& s : specials_) {
      if (text.substr(i, s.size()) == s) {
        special = &s;
        break;
      }
    }
    if (special == nullptr) {
      ++i;
      continue;
    }
    RETURN_IF_ERROR(flush(i));
    tokens.push_back(ids_.at(*special));
    i += special->size();
    start = i;
  }
  RETURN_IF_ERROR(flush(text.size()));
  return tokens;
}

std::string ByteBpeTokenizer::Decode(int /*prev_token*/, int token) const {
  if (token < 0 || token >= vocab_size()) return "";
  if (!vocab_.token_types.empty() &&
      vocab_.token_types[token] == kTokenTypeControl) {
    return "";
  }
  const std::string& piece = vocab_.tokens[token];
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    size_t len;
    const uint32_t cp = DecodeUtf8(piece, i, &len);
    auto it = unicode_to_byte_.find(cp);
    if (it != unicode_to_byte_.end()) {
      out += static_cast<char>(it->second);
    } else {
      out.append(piece, i, len);
    }
    i += len;
  }
  return out;
}

}  // namespace kvtier::model
