#include "worker/eval/passkey.h"

#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"

namespace kvtier::eval {
namespace {

constexpr char kTask[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and "
    "memorize them. I will quiz you about the important information there.";
constexpr char kFiller[] =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back "
    "again. ";

std::string Filler(uint32_t chars) {
  std::string out;
  out.reserve(chars + sizeof(kFiller));
  while (out.size() < chars) out += kFiller;
  out.resize(chars);
  return out;
}

}  // namespace

absl::StatusOr<std::string> BuildPasskeyPrompt(const PasskeyCase& c) {
  if (!(c.depth >= 0 && c.depth <= 1) || c.passkey < 1 || c.passkey > 50000) {
    return absl::InvalidArgumentError(absl::StrCat("passkey case: depth ", c.depth,
                                                   " (0..1), passkey ", c.passkey,
                                                   " (1..50000)"));
  }
  const auto prefix = static_cast<uint32_t>(std::lround(c.depth * c.filler_chars));
  const std::string key = absl::StrCat(c.passkey);
  return absl::StrCat(kTask, " ", Filler(prefix), " The pass key is ", key, ". Remember it. ",
                      key, " is the pass key. ", Filler(c.filler_chars - prefix),
                      " What is the pass key? The pass key is");
}

std::string PasskeyAnswer(uint32_t passkey) { return absl::StrCat(" ", passkey); }

std::vector<PasskeyCase> PasskeyCases(uint32_t filler_chars, uint32_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> key(1, 50000);
  std::vector<PasskeyCase> cases;
  for (uint32_t i = 0; i < count; ++i) {
    const double depth = count == 1 ? 0.0 : static_cast<double>(i) / (count - 1);
    cases.push_back({.filler_chars = filler_chars, .depth = depth, .passkey = key(rng)});
  }
  return cases;
}

}  // namespace kvtier::eval
