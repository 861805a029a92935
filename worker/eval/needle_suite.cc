#include "worker/eval/needle_suite.h"

#include <algorithm>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace kvtier::eval {
namespace {

constexpr const char* kLandmark[] = {
    "The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
    "There and back again."};

constexpr const char* kTravel[] = {
    "The ferry to the northern islands leaves twice a day, once at dawn and once after lunch.",
    "Most travellers bring a thick coat, because the wind on the deck is colder than it looks.",
    "In the harbour town the bakery sells rye bread with caraway seeds and small honey cakes.",
    "An old lighthouse keeper still walks the cliff path every evening to check the lamp.",
    "Fishing boats return in the late afternoon, followed by a cloud of hungry gulls.",
    "The museum near the church displays maps drawn by sailors more than two centuries ago.",
    "On market days the square fills with stalls of wool, smoked fish and wooden toys.",
    "Children race along the pier while their parents wait for the bus to the farms.",
    "A narrow bridge connects the two largest islands and closes whenever storms arrive.",
    "Visitors often say the sunsets there last longer than anywhere else they have been.",
    "The only hotel has nine rooms, and the owner cooks breakfast for every guest herself.",
    "Hikers who reach the northern cape can see seals resting on the flat rocks below.",
};

constexpr const char* kWorkshop[] = {
    "On Monday the apprentices sorted the oak boards by length and checked them for cracks.",
    "The master joiner prefers hand planes, although the shop owns two electric ones.",
    "A customer ordered a walnut table with curved legs and a drawer for her letters.",
    "Glue dries slowly in the winter, so the clamps stay on overnight.",
    "Every Wednesday a truck delivers sawdust to a farm that uses it for bedding.",
    "The oldest chisel in the shop belonged to the founder and is still sharpened weekly.",
    "Sanding a chair by hand takes most of an afternoon and fills the room with fine dust.",
    "On Thursday the team varnished three bookcases and left the windows open.",
    "The radio on the shelf plays old jazz, and nobody remembers who tuned it.",
    "Offcuts too small for furniture become toy boats for the neighbours' children.",
    "Before closing, someone sweeps the floor and hangs every tool back on its hook.",
    "On Friday the walnut table was finished, wrapped in blankets and carried to the van.",
};

constexpr const char* kWords1[] = {"amber",  "silver", "quiet",  "rapid", "golden", "hollow",
                                   "crimson", "gentle", "frozen", "bright", "velvet", "ancient",
                                   "copper", "distant", "lucky",  "marble"};
constexpr const char* kWords2[] = {"falcon", "lantern", "river",  "meadow", "harbor", "violin",
                                   "comet",  "orchard", "anchor", "pepper", "glacier", "feather",
                                   "tunnel", "saddle",  "walrus", "candle"};
// Locker names of the kv task: one word each, none a key word.
constexpr const char* kLockers[] = {"heron", "maple", "granite", "tulip", "cobalt",
                                    "juniper", "otter", "saffron", "willow", "basalt",
                                    "lemon", "sparrow"};
constexpr uint32_t kPairs = 6;

template <size_t N>
std::vector<std::string> Sentences(const char* const (&list)[N]) {
  return std::vector<std::string>(list, list + N);
}

std::string Key(KeyFormat f, std::mt19937_64& rng) {
  switch (f) {
    case KeyFormat::kDigits:
      return absl::StrCat(std::uniform_int_distribution<uint32_t>(100000, 999999)(rng));
    case KeyFormat::kWords: {
      std::uniform_int_distribution<size_t> a(0, std::size(kWords1) - 1);
      std::uniform_int_distribution<size_t> b(0, std::size(kWords2) - 1);
      const size_t i = a(rng);
      return absl::StrCat(kWords1[i], " ", kWords2[b(rng)]);
    }
    case KeyFormat::kUuid: {
      static constexpr char kHex[] = "0123456789abcdef";
      std::uniform_int_distribution<int> h(0, 15);
      std::string out;
      for (int i = 0; i < 13; ++i) out += i == 8 ? '-' : kHex[h(rng)];
      return out;
    }
  }
  return "";
}

// Whole sentences of the filler, about `chars` characters in all.
std::vector<std::string> FillerSentences(NeedleFiller f, uint32_t chars, std::mt19937_64& rng) {
  std::vector<std::string> pool = f == NeedleFiller::kLandmark ? Sentences(kLandmark)
                                  : f == NeedleFiller::kTravel ? Sentences(kTravel)
                                                               : Sentences(kWorkshop);
  std::vector<std::string> out;
  size_t total = 0;
  while (total < chars || out.empty()) {
    std::vector<std::string> pass = pool;
    if (f != NeedleFiller::kLandmark) std::shuffle(pass.begin(), pass.end(), rng);
    for (std::string& s : pass) {
      if (total >= chars && !out.empty()) break;
      total += s.size() + 1;
      out.push_back(std::move(s));
    }
  }
  return out;
}

size_t At(double depth, size_t n) { return static_cast<size_t>(std::lround(depth * n)); }

}  // namespace

std::string NeedleTaskName(NeedleTask t) { return t == NeedleTask::kPasskey ? "passkey" : "kv"; }
std::string NeedleFillerName(NeedleFiller f) {
  return f == NeedleFiller::kLandmark ? "landmark"
         : f == NeedleFiller::kTravel ? "travel"
                                      : "workshop";
}
std::string KeyFormatName(KeyFormat f) {
  return f == KeyFormat::kDigits ? "digits" : f == KeyFormat::kWords ? "words" : "uuid";
}

absl::StatusOr<NeedleTask> ParseNeedleTask(const std::string& name) {
  for (NeedleTask t : {NeedleTask::kPasskey, NeedleTask::kKeyValue}) {
    if (name == NeedleTaskName(t)) return t;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown task '", name, "' (passkey, kv)"));
}

absl::StatusOr<NeedleFiller> ParseNeedleFiller(const std::string& name) {
  for (NeedleFiller f : {NeedleFiller::kLandmark, NeedleFiller::kTravel, NeedleFiller::kWorkshop}) {
    if (name == NeedleFillerName(f)) return f;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown filler '", name, "' (landmark, travel, workshop)"));
}

absl::StatusOr<KeyFormat> ParseKeyFormat(const std::string& name) {
  for (KeyFormat f : {KeyFormat::kDigits, KeyFormat::kWords, KeyFormat::kUuid}) {
    if (name == KeyFormatName(f)) return f;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown key format '", name, "' (digits, words, uuid)"));
}

absl::StatusOr<NeedleText> BuildNeedleText(const NeedleCase& c, uint32_t filler_chars) {
  if (!(c.depth >= 0 && c.depth <= 1)) {
    return absl::InvalidArgumentError(absl::StrCat("needle depth ", c.depth, " outside [0, 1]"));
  }
  std::mt19937_64 rng(c.seed);
  NeedleText t;
  std::vector<std::string> body = FillerSentences(c.filler, filler_chars, rng);
  if (c.task == NeedleTask::kPasskey) {
    t.key = Key(c.format, rng);
    body.insert(body.begin() + At(c.depth, body.size()),
                absl::StrCat("The secret code is ", t.key, ". Remember it: ", t.key,
                             " is the secret code."));
    t.prompt = absl::StrCat(
        "Read the notes below. One of them holds a secret code; remember it, you will be "
        "asked for it.\n\n",
        absl::StrJoin(body, " "),
        "\n\nQuestion: What is the secret code? Answer: The secret code is");
  } else {
    std::vector<std::string> names(std::begin(kLockers), std::end(kLockers));
    std::shuffle(names.begin(), names.end(), rng);
    names.resize(kPairs);
    std::vector<std::string> keys;
    while (keys.size() < kPairs) {
      std::string k = Key(c.format, rng);
      if (std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(std::move(k));
    }
    // Pair 0 is asked for and sits at the depth; the others anywhere.
    const size_t n = body.size();
    std::vector<std::pair<size_t, size_t>> slots = {{At(c.depth, n), 0}};
    std::uniform_int_distribution<size_t> any(0, n);
    for (size_t i = 1; i < kPairs; ++i) slots.push_back({any(rng), i});
    // Insert from the back so earlier positions stay valid; pair 0 goes
    // first among equal positions.
    std::stable_sort(slots.begin(), slots.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second > b.second);
    });
    for (const auto& [pos, i] : slots) {
      body.insert(body.begin() + pos,
                  absl::StrCat("Locker ", names[i], " holds the code ", keys[i], "."));
    }
    t.key = keys[0];
    t.prompt = absl::StrCat(
        "Read the notes below. They mention several lockers and the code each one holds; "
        "you will be asked about one of them.\n\n",
        absl::StrJoin(body, " "), "\n\nQuestion: Which code does locker ", names[0],
        " hold? Answer: Locker ", names[0], " holds the code");
  }
  t.answer = absl::StrCat(" ", t.key);
  return t;
}

absl::StatusOr<std::vector<NeedleCase>> NeedleCases(const std::vector<NeedleTask>& tasks,
                                                    const std::vector<NeedleFiller>& fillers,
                                                    const std::vector<KeyFormat>& formats,
                                                    const std::vector<double>& depths,
                                                    uint32_t count, uint64_t seed) {
  if (tasks.empty() || fillers.empty() || formats.empty() || depths.empty()) {
    return absl::InvalidArgumentError("needle cases need tasks, fillers, formats and depths");
  }
  for (double d : depths) {
    if (!(d >= 0 && d <= 1)) {
      return absl::InvalidArgumentError(absl::StrCat("needle depth ", d, " outside [0, 1]"));
    }
  }
  const size_t nt = tasks.size(), nf = fillers.size(), nk = formats.size();
  std::vector<NeedleCase> out;
  for (uint32_t i = 0; i < count; ++i) {
    out.push_back({.task = tasks[i % nt],
                   .filler = fillers[(i / nt) % nf],
                   .format = formats[(i / (nt * nf)) % nk],
                   .depth = depths[i % depths.size()],
                   .seed = seed + i});
  }
  return out;
}

std::pair<double, double> WilsonInterval(uint32_t successes, uint32_t n, double z) {
  if (n == 0) return {0.0, 1.0};
  const double p = static_cast<double>(successes) / n;
  const double z2 = z * z;
  const double denom = 1 + z2 / n;
  const double centre = (p + z2 / (2.0 * n)) / denom;
  const double half = z * std::sqrt(p * (1 - p) / n + z2 / (4.0 * n * n)) / denom;
  return {std::max(0.0, centre - half), std::min(1.0, centre + half)};
}

absl::Status NeedleSuiteOptions::Validate(const std::string& command,
                                          uint32_t max_positions) const {
  if (contexts.empty() || cases == 0) {
    return absl::InvalidArgumentError(absl::StrCat(command, ": contexts and cases are needed"));
  }
  for (uint32_t c : contexts) {
    if (c < 64 || c > max_positions) {
      return absl::InvalidArgumentError(
          absl::StrCat(command, ": context ", c, " outside [64, ", max_positions, "]"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<NeedleCase>> NeedleSuiteOptions::Cases() const {
  return NeedleCases(tasks, fillers, formats, depths, cases, seed);
}

}  // namespace kvtier::eval
