#include "worker/budget/profile.h"

#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "common/small_file.h"
#include "common/status_macros.h"

namespace kvtier {
namespace {

// Relative slack for monotonicity checks, so curves computed in floating
// point (sorted sums, prefix sums) are not rejected for rounding noise.
constexpr double kMonotoneSlack = 1e-12;

// Whitespace tokenizer over a whole file. Running out of tokens means the
// file was cut short (DATA_LOSS); a wrong token is INVALID_ARGUMENT.
class Tokens {
 public:
  explicit Tokens(std::string text) : text_(std::move(text)) {}

  absl::StatusOr<absl::string_view> Next() {
    while (pos_ < text_.size() &&
           std::isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
    if (pos_ >= text_.size()) {
      return absl::DataLossError("profile file ends before 'end'");
    }
    const size_t start = pos_;
    while (pos_ < text_.size() &&
           !std::isspace(static_cast<unsigned char>(text_[pos_]))) {
      ++pos_;
    }
    return absl::string_view(text_).substr(start, pos_ - start);
  }

  absl::Status Expect(absl::string_view word) {
    ASSIGN_OR_RETURN(absl::string_view got, Next());
    if (got != word) {
      return absl::InvalidArgumentError(
          absl::StrCat("profile: expected '", word, "', found '", got, "'"));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<uint32_t> U32() {
    ASSIGN_OR_RETURN(absl::string_view got, Next());
    uint32_t v;
    if (!absl::SimpleAtoi(got, &v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("profile: '", got, "' is not an unsigned integer"));
    }
    return v;
  }

  absl::StatusOr<double> Double() {
    ASSIGN_OR_RETURN(absl::string_view got, Next());
    double v;
    if (!absl::SimpleAtod(got, &v) || !std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("profile: '", got, "' is not a finite number"));
    }
    return v;
  }

  // Upper bound on the numbers left, so a corrupt count cannot make a
  // reader allocate more than the file could hold.
  size_t MaxTokensLeft() const { return (text_.size() - pos_) / 2 + 1; }

  // A header that announces `records` records of at least
  // `tokens_per_record` tokens each must fit in what is left of the file,
  // so a damaged count fails here instead of making the reader allocate
  // and initialise millions of empty records.
  absl::Status CheckRecordsFit(uint64_t records, size_t tokens_per_record,
                               absl::string_view what) const {
    if (records > MaxTokensLeft() / tokens_per_record) {
      return absl::DataLossError(absl::StrCat(
          "profile: ", records, " ", what, " announced, file is shorter"));
    }
    return absl::OkStatus();
  }

  absl::Status ExpectEnd() {
    RETURN_IF_ERROR(Expect("end"));
    while (pos_ < text_.size()) {
      if (!std::isspace(static_cast<unsigned char>(text_[pos_++]))) {
        return absl::InvalidArgumentError("profile: data after 'end'");
      }
    }
    return absl::OkStatus();
  }

 private:
  std::string text_;
  size_t pos_ = 0;
};

absl::StatusOr<Tokens> Load(const std::string& path) {
  // A profile lists a few numbers per layer and head.
  constexpr size_t kMaxProfileBytes = size_t{64} << 20;
  absl::StatusOr<std::string> text = ReadSmallFile(path, kMaxProfileBytes, "profile");
  if (absl::IsNotFound(text.status())) return absl::NotFoundError("no profile at " + path);
  if (!text.ok()) return text.status();
  return Tokens(*std::move(text));
}

absl::Status WriteAtomically(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out.write(text.data(), static_cast<std::streamsize>(text.size()));
    out.flush();
    if (!out) {
      std::remove(tmp.c_str());
      return absl::InternalError("write " + tmp + " failed");
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return absl::InternalError(
        absl::StrCat("rename ", tmp, ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

void AppendDoubles(const std::vector<double>& values, std::string* out) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out->push_back(' ');
    absl::StrAppendFormat(out, "%.17g", values[i]);
  }
  out->push_back('\n');
}

absl::StatusOr<std::vector<double>> ReadDoubles(Tokens& t, uint32_t n) {
  if (n > t.MaxTokensLeft()) {
    return absl::DataLossError(
        absl::StrCat("profile: ", n, " numbers announced, file is shorter"));
  }
  std::vector<double> values(n);
  for (uint32_t i = 0; i < n; ++i) {
    ASSIGN_OR_RETURN(values[i], t.Double());
  }
  return values;
}

}  // namespace

// ------------------------------------------------------------ validation

absl::Status ValidateXkvProfile(const XkvProfile& p) {
  if (p.n_layers == 0 || p.samples.empty()) {
    return absl::InvalidArgumentError("XKV profile has no layers or samples");
  }
  for (size_t s = 0; s < p.samples.size(); ++s) {
    if (p.samples[s].size() != p.n_layers) {
      return absl::InvalidArgumentError(
          absl::StrCat("XKV profile sample ", s, " has ", p.samples[s].size(),
                       " layers, expected ", p.n_layers));
    }
    for (uint32_t l = 0; l < p.n_layers; ++l) {
      const std::vector<double>& inc = p.samples[s][l];
      const std::string where =
          absl::StrCat("XKV profile sample ", s, " layer ", l);
      double total = 0;
      for (size_t i = 0; i < inc.size(); ++i) {
        if (!std::isfinite(inc[i]) || inc[i] < 0) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": increment ", i, " is negative or NaN"));
        }
        if (i > 0 && inc[i] > inc[i - 1] * (1 + kMonotoneSlack)) {
          return absl::InvalidArgumentError(absl::StrCat(
              where, ": increments rise at rank ", i,
              " (retention must be concave: sort each head's scores)"));
        }
        total += inc[i];
      }
      if (!(total > 0)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, ": curve is empty or all zero"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLukvProfile(const LukvProfile& p) {
  if (p.n_layers == 0 || p.n_kv_heads == 0 || p.samples.empty()) {
    return absl::InvalidArgumentError("LU-KV profile is empty");
  }
  const size_t units = size_t{p.n_layers} * p.n_kv_heads;
  for (size_t s = 0; s < p.samples.size(); ++s) {
    if (p.samples[s].size() != units) {
      return absl::InvalidArgumentError(
          absl::StrCat("LU-KV profile sample ", s, " has ", p.samples[s].size(),
                       " curves, expected ", units));
    }
    for (size_t u = 0; u < units; ++u) {
      const LukvCurve& c = p.samples[s][u];
      const std::string where =
          absl::StrCat("LU-KV profile sample ", s, " layer ", u / p.n_kv_heads,
                       " head ", u % p.n_kv_heads);
      if (c.length == 0 || c.protected_tokens > c.length ||
          c.loss.size() != size_t{c.length} - c.protected_tokens + 1) {
        return absl::InvalidArgumentError(absl::StrCat(
            where,
            ": needs length >= protected and length - protected + 1 "
            "loss points"));
      }
      if (c.loss[0] != 0) {
        return absl::InvalidArgumentError(absl::StrCat(where, ": C[0] != 0"));
      }
      for (size_t i = 1; i < c.loss.size(); ++i) {
        if (!std::isfinite(c.loss[i]) ||
            c.loss[i] < c.loss[i - 1] - kMonotoneSlack * std::abs(c.loss[i])) {
          return absl::InvalidArgumentError(
              absl::StrCat(where, ": loss decreases or is not finite at ", i));
        }
      }
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateLukvTable(const LukvTable& t) {
  if (t.n_layers == 0 || t.n_kv_heads == 0 ||
      t.prune.size() != static_cast<size_t>(kLukvLevels)) {
    return absl::InvalidArgumentError(
        "LU-KV table needs layers, heads and 99 levels");
  }
  const size_t units = size_t{t.n_layers} * t.n_kv_heads;
  for (size_t p = 0; p < t.prune.size(); ++p) {
    if (t.prune[p].size() != units) {
      return absl::InvalidArgumentError(
          absl::StrCat("LU-KV table level ", p + 1, " has ", t.prune[p].size(),
                       " entries, expected ", units));
    }
    for (double r : t.prune[p]) {
      if (!(r >= 0 && r < 1)) {
        return absl::InvalidArgumentError(
            absl::StrCat("LU-KV table level ", p + 1, " has prune ratio ", r,
                         " outside [0, 1)"));
      }
    }
  }
  return absl::OkStatus();
}

absl::Status AppendSamples(XkvProfile* into, const XkvProfile& from) {
  RETURN_IF_ERROR(ValidateXkvProfile(*into));
  RETURN_IF_ERROR(ValidateXkvProfile(from));
  if (into->n_layers != from.n_layers || into->window != from.window ||
      into->kernel != from.kernel) {
    return absl::InvalidArgumentError(
        "XKV profiles differ in layers, window or kernel");
  }
  into->samples.insert(into->samples.end(), from.samples.begin(),
                       from.samples.end());
  return absl::OkStatus();
}

absl::Status AppendSamples(LukvProfile* into, const LukvProfile& from) {
  RETURN_IF_ERROR(ValidateLukvProfile(*into));
  RETURN_IF_ERROR(ValidateLukvProfile(from));
  if (into->n_layers != from.n_layers || into->n_kv_heads != from.n_kv_heads) {
    return absl::InvalidArgumentError("LU-KV profiles differ in shape");
  }
  into->samples.insert(into->samples.end(), from.samples.begin(),
                       from.samples.end());
  return absl::OkStatus();
}

// ------------------------------------------------------------------ XKV

absl::Status WriteXkvProfile(const std::string& path, const XkvProfile& p) {
  RETURN_IF_ERROR(ValidateXkvProfile(p));
  std::string text = absl::StrCat("kvtier-xkv-profile 1\nlayers ", p.n_layers,
                                  " samples ", p.samples.size(), " window ",
                                  p.window, " kernel ", p.kernel, "\n");
  for (size_t s = 0; s < p.samples.size(); ++s) {
    for (uint32_t l = 0; l < p.n_layers; ++l) {
      absl::StrAppend(&text, "curve ", s, " ", l, " ", p.samples[s][l].size(),
                      "\n");
      AppendDoubles(p.samples[s][l], &text);
    }
  }
  text += "end\n";
  return WriteAtomically(path, text);
}

absl::StatusOr<XkvProfile> ReadXkvProfile(const std::string& path) {
  ASSIGN_OR_RETURN(Tokens t, Load(path));
  RETURN_IF_ERROR(t.Expect("kvtier-xkv-profile"));
  RETURN_IF_ERROR(t.Expect("1"));
  XkvProfile p;
  RETURN_IF_ERROR(t.Expect("layers"));
  ASSIGN_OR_RETURN(p.n_layers, t.U32());
  RETURN_IF_ERROR(t.Expect("samples"));
  ASSIGN_OR_RETURN(uint32_t samples, t.U32());
  RETURN_IF_ERROR(t.Expect("window"));
  ASSIGN_OR_RETURN(p.window, t.U32());
  RETURN_IF_ERROR(t.Expect("kernel"));
  ASSIGN_OR_RETURN(p.kernel, t.U32());
  if (p.n_layers == 0 || samples == 0 ||
      uint64_t{p.n_layers} * samples > (uint64_t{1} << 24)) {
    return absl::InvalidArgumentError("XKV profile: bad layers/samples");
  }
  // "curve s l n" and the n numbers.
  RETURN_IF_ERROR(t.CheckRecordsFit(uint64_t{p.n_layers} * samples, 4,
                                    "XKV curves"));
  p.samples.assign(samples, std::vector<std::vector<double>>(p.n_layers));
  std::vector<bool> seen(size_t{samples} * p.n_layers, false);
  for (size_t k = 0; k < seen.size(); ++k) {
    RETURN_IF_ERROR(t.Expect("curve"));
    ASSIGN_OR_RETURN(uint32_t s, t.U32());
    ASSIGN_OR_RETURN(uint32_t l, t.U32());
    ASSIGN_OR_RETURN(uint32_t n, t.U32());
    if (s >= samples || l >= p.n_layers || seen[size_t{s} * p.n_layers + l]) {
      return absl::InvalidArgumentError(absl::StrCat(
          "XKV profile: curve (", s, ", ", l, ") out of range or repeated"));
    }
    seen[size_t{s} * p.n_layers + l] = true;
    ASSIGN_OR_RETURN(p.samples[s][l], ReadDoubles(t, n));
  }
  RETURN_IF_ERROR(t.ExpectEnd());
  RETURN_IF_ERROR(ValidateXkvProfile(p));
  return p;
}

// ---------------------------------------------------------------- LU-KV

absl::Status WriteLukvProfile(const std::string& path, const LukvProfile& p) {
  RETURN_IF_ERROR(ValidateLukvProfile(p));
  std::string text =
      absl::StrCat("kvtier-lukv-profile 1\nlayers ", p.n_layers, " kv_heads ",
                   p.n_kv_heads, " samples ", p.samples.size(), "\n");
  for (size_t s = 0; s < p.samples.size(); ++s) {
    for (size_t u = 0; u < p.samples[s].size(); ++u) {
      const LukvCurve& c = p.samples[s][u];
      absl::StrAppend(&text, "curve ", s, " ", u / p.n_kv_heads, " ",
                      u % p.n_kv_heads, " ", c.length, " ", c.protected_tokens,
                      " ", c.loss.size(), "\n");
      AppendDoubles(c.loss, &text);
    }
  }
  text += "end\n";
  return WriteAtomically(path, text);
}

absl::StatusOr<LukvProfile> ReadLukvProfile(const std::string& path) {
  ASSIGN_OR_RETURN(Tokens t, Load(path));
  RETURN_IF_ERROR(t.Expect("kvtier-lukv-profile"));
  RETURN_IF_ERROR(t.Expect("1"));
  LukvProfile p;
  RETURN_IF_ERROR(t.Expect("layers"));
  ASSIGN_OR_RETURN(p.n_layers, t.U32());
  RETURN_IF_ERROR(t.Expect("kv_heads"));
  ASSIGN_OR_RETURN(p.n_kv_heads, t.U32());
  RETURN_IF_ERROR(t.Expect("samples"));
  ASSIGN_OR_RETURN(uint32_t samples, t.U32());
  const uint64_t units = uint64_t{p.n_layers} * p.n_kv_heads;
  if (units == 0 || samples == 0 || units * samples > (uint64_t{1} << 24)) {
    return absl::InvalidArgumentError("LU-KV profile: bad shape");
  }
  // "curve s l h length protected n" and the n numbers.
  RETURN_IF_ERROR(t.CheckRecordsFit(units * samples, 7, "LU-KV curves"));
  p.samples.assign(samples, std::vector<LukvCurve>(units));
  std::vector<bool> seen(units * samples, false);
  for (size_t k = 0; k < seen.size(); ++k) {
    RETURN_IF_ERROR(t.Expect("curve"));
    ASSIGN_OR_RETURN(uint32_t s, t.U32());
    ASSIGN_OR_RETURN(uint32_t l, t.U32());
    ASSIGN_OR_RETURN(uint32_t h, t.U32());
    if (s >= samples || l >= p.n_layers || h >= p.n_kv_heads ||
        seen[s * units + uint64_t{l} * p.n_kv_heads + h]) {
      return absl::InvalidArgumentError(
          absl::StrCat("LU-KV profile: curve (", s, ", ", l, ", ", h,
                       ") out of range or repeated"));
    }
    seen[s * units + uint64_t{l} * p.n_kv_heads + h] = true;
    LukvCurve& c = p.samples[s][uint64_t{l} * p.n_kv_heads + h];
    ASSIGN_OR_RETURN(c.length, t.U32());
    ASSIGN_OR_RETURN(c.protected_tokens, t.U32());
    ASSIGN_OR_RETURN(uint32_t n, t.U32());
    ASSIGN_OR_RETURN(c.loss, ReadDoubles(t, n));
  }
  RETURN_IF_ERROR(t.ExpectEnd());
  RETURN_IF_ERROR(ValidateLukvProfile(p));
  return p;
}

absl::Status WriteLukvTable(const std::string& path, const LukvTable& table) {
  RETURN_IF_ERROR(ValidateLukvTable(table));
  std::string text =
      absl::StrCat("kvtier-lukv-table 1\nlayers ", table.n_layers, " kv_heads ",
                   table.n_kv_heads, " levels ", kLukvLevels, "\n");
  for (int p = 0; p < kLukvLevels; ++p) {
    absl::StrAppend(&text, "level ", p + 1, " ");
    AppendDoubles(table.prune[p], &text);
  }
  text += "end\n";
  return WriteAtomically(path, text);
}

absl::StatusOr<LukvTable> ReadLukvTable(const std::string& path) {
  ASSIGN_OR_RETURN(Tokens t, Load(path));
  RETURN_IF_ERROR(t.Expect("kvtier-lukv-table"));
  RETURN_IF_ERROR(t.Expect("1"));
  LukvTable table;
  RETURN_IF_ERROR(t.Expect("layers"));
  ASSIGN_OR_RETURN(table.n_layers, t.U32());
  RETURN_IF_ERROR(t.Expect("kv_heads"));
  ASSIGN_OR_RETURN(table.n_kv_heads, t.U32());
  RETURN_IF_ERROR(t.Expect("levels"));
  RETURN_IF_ERROR(t.Expect("99"));
  const uint64_t units = uint64_t{table.n_layers} * table.n_kv_heads;
  if (units == 0 || units > (uint64_t{1} << 20)) {
    return absl::InvalidArgumentError("LU-KV table: bad shape");
  }
  table.prune.resize(kLukvLevels);
  for (int p = 0; p < kLukvLevels; ++p) {
    RETURN_IF_ERROR(t.Expect("level"));
    RETURN_IF_ERROR(t.Expect(absl::StrCat(p + 1)));
    ASSIGN_OR_RETURN(table.prune[p],
                     ReadDoubles(t, static_cast<uint32_t>(units)));
  }
  RETURN_IF_ERROR(t.ExpectEnd());
  RETURN_IF_ERROR(ValidateLukvTable(table));
  return table;
}

}  // namespace kvtier
