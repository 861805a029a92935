// Retrieval prompts for `kvtier-eval needles`: needle-in-a-haystack cases
// that are not tuned to one filler, one key format or one task.
//
// A case is a task, a filler, a key format, a depth and a seed:
//   tasks    passkey    one secret code hidden in the filler, then asked for;
//            kv         six "locker NAME holds the code KEY" pairs spread
//                       through the filler, then one of them asked for (the
//                       asked pair sits at the depth, the others at random);
//   fillers  landmark   the papers' repeated five sentences (ALGORITHMS.md §7);
//            travel     natural prose: notes on a coastal trip;
//            workshop   natural prose: a furniture workshop's week;
//            (prose sentences come in a shuffled order, reshuffled per pass);
//   formats  digits     six digits, the first not 0;
//            words      two words ("amber falcon");
//            uuid       8 hex digits, a hyphen, 4 hex digits ("3f9a1c2e-7b41");
//   depth    0..1: where the needle sits, as a fraction of the filler's
//            sentences.
// Every random choice comes from the case's seed, so a case is reproducible.
// The prompt ends where the answer begins; the answer is " KEY", judged by
// exact token match of a greedy continuation (as ArkVale judges passkeys).
//
// Thread-safety: stateless.
#ifndef KVTIER_WORKER_EVAL_NEEDLE_SUITE_H_
#define KVTIER_WORKER_EVAL_NEEDLE_SUITE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace kvtier::eval {

enum class NeedleTask : uint8_t { kPasskey, kKeyValue };
enum class NeedleFiller : uint8_t { kLandmark, kTravel, kWorkshop };
enum class KeyFormat : uint8_t { kDigits, kWords, kUuid };

std::string NeedleTaskName(NeedleTask t);
std::string NeedleFillerName(NeedleFiller f);
std::string KeyFormatName(KeyFormat f);
// INVALID_ARGUMENT naming the accepted values for an unknown name.
absl::StatusOr<NeedleTask> ParseNeedleTask(const std::string& name);
absl::StatusOr<NeedleFiller> ParseNeedleFiller(const std::string& name);
absl::StatusOr<KeyFormat> ParseKeyFormat(const std::string& name);

struct NeedleCase {
  NeedleTask task = NeedleTask::kPasskey;
  NeedleFiller filler = NeedleFiller::kLandmark;
  KeyFormat format = KeyFormat::kDigits;
  double depth = 0;  // 0..1
  uint64_t seed = 0;
};

struct NeedleText {
  std::string prompt;  // ends right before the answer
  std::string answer;  // " KEY"
  std::string key;
};

// The case's text with about `filler_chars` characters of filler (whole
// sentences, at least one). INVALID_ARGUMENT for a depth outside [0, 1].
absl::StatusOr<NeedleText> BuildNeedleText(const NeedleCase& c, uint32_t filler_chars);

// `count` cases mixing the given tasks, fillers and formats evenly: case i
// takes tasks[i % T], fillers[(i / T) % F], formats[(i / (T F)) % K] and
// depths[i % D], seed `seed` + i. INVALID_ARGUMENT when a list is empty.
absl::StatusOr<std::vector<NeedleCase>> NeedleCases(const std::vector<NeedleTask>& tasks,
                                                    const std::vector<NeedleFiller>& fillers,
                                                    const std::vector<KeyFormat>& formats,
                                                    const std::vector<double>& depths,
                                                    uint32_t count, uint64_t seed);

// Which cases a run of the suite takes, at each context length.
struct NeedleSuiteOptions {
  std::vector<uint32_t> contexts = {1024};  // prompt + answer tokens, each
  std::vector<NeedleTask> tasks = {NeedleTask::kPasskey, NeedleTask::kKeyValue};
  std::vector<NeedleFiller> fillers = {NeedleFiller::kLandmark, NeedleFiller::kTravel,
                                       NeedleFiller::kWorkshop};
  std::vector<KeyFormat> formats = {KeyFormat::kDigits, KeyFormat::kWords, KeyFormat::kUuid};
  std::vector<double> depths = {0, 0.25, 0.5, 0.75, 1};
  uint32_t cases = 18;  // per context
  uint64_t seed = 42;

  // INVALID_ARGUMENT, prefixed with `command`, without contexts or cases or
  // for a context outside [64, max_positions].
  absl::Status Validate(const std::string& command, uint32_t max_positions) const;
  // NeedleCases of these options.
  absl::StatusOr<std::vector<NeedleCase>> Cases() const;
};

// The Wilson score interval of `successes` out of `n` at z (1.96: 95%);
// {0, 1} for n = 0.
std::pair<double, double> WilsonInterval(uint32_t successes, uint32_t n, double z = 1.96);

}  // namespace kvtier::eval

#endif  // KVTIER_WORKER_EVAL_NEEDLE_SUITE_H_
