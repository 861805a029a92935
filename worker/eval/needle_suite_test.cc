#include "worker/eval/needle_suite.h"

#include <regex>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::eval {
namespace {

using ::testing::HasSubstr;

size_t Count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

TEST(NeedleSuiteTest, KeyFormatsHaveTheirShape) {
  const std::regex digits("[1-9][0-9]{5}");
  const std::regex words("[a-z]+ [a-z]+");
  const std::regex uuid("[0-9a-f]{8}-[0-9a-f]{4}");
  for (uint64_t seed = 0; seed < 50; ++seed) {
    for (auto [format, re] : {std::pair{KeyFormat::kDigits, &digits},
                              std::pair{KeyFormat::kWords, &words},
                              std::pair{KeyFormat::kUuid, &uuid}}) {
      NeedleCase c{.format = format, .seed = seed};
      auto t = BuildNeedleText(c, 500);
      ASSERT_TRUE(t.ok()) << t.status();
      EXPECT_TRUE(std::regex_match(t->key, *re)) << KeyFormatName(format) << ": " << t->key;
      EXPECT_EQ(t->answer, " " + t->key);
    }
  }
}

TEST(NeedleSuiteTest, PasskeySitsAtItsDepthAndThePromptEndsBeforeTheAnswer) {
  for (NeedleFiller filler :
       {NeedleFiller::kLandmark, NeedleFiller::kTravel, NeedleFiller::kWorkshop}) {
    size_t previous = 0;
    for (double depth : {0.0, 0.25, 0.5, 0.75, 1.0}) {
      NeedleCase c{.task = NeedleTask::kPasskey, .filler = filler, .depth = depth, .seed = 3};
      auto t = BuildNeedleText(c, 4000);
      ASSERT_TRUE(t.ok());
      // The key appears twice in the needle and nowhere else.
      EXPECT_EQ(Count(t->prompt, t->key), 2u);
      EXPECT_TRUE(absl::EndsWith(t->prompt, "The secret code is"));
      const size_t at = t->prompt.find("The secret code is " + t->key);
      ASSERT_NE(at, std::string::npos);
      // Deeper needles sit later (the filler is the same for one seed).
      EXPECT_GE(at, previous) << NeedleFillerName(filler) << " depth " << depth;
      previous = at;
      const double rel = static_cast<double>(at) / t->prompt.size();
      EXPECT_NEAR(rel, depth, 0.08) << NeedleFillerName(filler) << " depth " << depth;
    }
  }
}

TEST(NeedleSuiteTest, FillerLengthFollowsTheCharacterCount) {
  for (uint32_t chars : {200u, 2000u, 20000u}) {
    NeedleCase c{.filler = NeedleFiller::kTravel, .seed = 1};
    auto t = BuildNeedleText(c, chars);
    ASSERT_TRUE(t.ok());
    EXPECT_GE(t->prompt.size(), chars);
    // Whole sentences past the count: at most one sentence (< 100 chars)
    // plus the task, the needle and the question.
    EXPECT_LT(t->prompt.size(), chars + 400) << chars;
  }
}

TEST(NeedleSuiteTest, KeyValueCaseAsksForOneOfSixDistinctPairs) {
  for (uint64_t seed = 0; seed < 20; ++seed) {
    NeedleCase c{.task = NeedleTask::kKeyValue, .filler = NeedleFiller::kWorkshop,
                 .format = KeyFormat::kUuid, .depth = 0.5, .seed = seed};
    auto t = BuildNeedleText(c, 3000);
    ASSERT_TRUE(t.ok());
    EXPECT_EQ(Count(t->prompt, " holds the code"), 7u);  // six pairs + the answer line
    const std::regex pair("Locker ([a-z]+) holds the code ([0-9a-f-]+)\\.");
    std::set<std::string> names, keys;
    for (std::sregex_iterator it(t->prompt.begin(), t->prompt.end(), pair), end; it != end;
         ++it) {
      names.insert((*it)[1]);
      keys.insert((*it)[2]);
    }
    EXPECT_EQ(names.size(), 6u);
    EXPECT_EQ(keys.size(), 6u);
    EXPECT_EQ(keys.count(t->key), 1u);
    // The question names the locker whose code is the answer.
    const std::smatch m = [&] {
      std::smatch out;
      std::regex_search(t->prompt, out, std::regex("Which code does locker ([a-z]+) hold"));
      return out;
    }();
    ASSERT_EQ(m.size(), 2u);
    EXPECT_THAT(t->prompt, HasSubstr("Locker " + m[1].str() + " holds the code " + t->key + "."));
    EXPECT_TRUE(absl::EndsWith(t->prompt, "Locker " + m[1].str() + " holds the code"));
  }
}

TEST(NeedleSuiteTest, CasesAreReproducibleAndDifferBySeed) {
  NeedleCase c{.task = NeedleTask::kKeyValue, .filler = NeedleFiller::kTravel,
               .format = KeyFormat::kWords, .depth = 0.3, .seed = 11};
  EXPECT_EQ(BuildNeedleText(c, 2000)->prompt, BuildNeedleText(c, 2000)->prompt);
  NeedleCase d = c;
  d.seed = 12;
  EXPECT_NE(BuildNeedleText(c, 2000)->prompt, BuildNeedleText(d, 2000)->prompt);
}

TEST(NeedleSuiteTest, CasesMixTasksFillersFormatsAndDepths) {
  auto cases = NeedleCases({NeedleTask::kPasskey, NeedleTask::kKeyValue},
                           {NeedleFiller::kLandmark, NeedleFiller::kTravel, NeedleFiller::kWorkshop},
                           {KeyFormat::kDigits, KeyFormat::kWords, KeyFormat::kUuid},
                           {0, 0.25, 0.5, 0.75, 1}, 18, 100);
  ASSERT_TRUE(cases.ok());
  ASSERT_EQ(cases->size(), 18u);
  std::set<std::tuple<int, int, int>> combos;
  std::set<double> depths;
  for (size_t i = 0; i < cases->size(); ++i) {
    const NeedleCase& c = (*cases)[i];
    combos.insert({static_cast<int>(c.task), static_cast<int>(c.filler),
                   static_cast<int>(c.format)});
    depths.insert(c.depth);
    EXPECT_EQ(c.seed, 100 + i);
  }
  EXPECT_EQ(combos.size(), 18u);  // every task x filler x format once
  EXPECT_EQ(depths.size(), 5u);
}

TEST(NeedleSuiteTest, BadInputsAreRejected) {
  EXPECT_EQ(BuildNeedleText({.depth = 1.5}, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildNeedleText({.depth = -0.1}, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NeedleCases({}, {NeedleFiller::kTravel}, {KeyFormat::kDigits}, {0.5}, 3, 1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(NeedleCases({NeedleTask::kPasskey}, {NeedleFiller::kTravel}, {KeyFormat::kDigits},
                        {2.0}, 3, 1)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseNeedleTask("haystack").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ParseNeedleFiller("workshop"), NeedleFiller::kWorkshop);
  EXPECT_EQ(*ParseKeyFormat("uuid"), KeyFormat::kUuid);
  EXPECT_EQ(ParseKeyFormat("hex").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(NeedleSuiteTest, WilsonIntervalMatchesTheFormula) {
  // 9 of 10 at z = 1.96: (0.5958, 0.9821).
  auto [lo, hi] = WilsonInterval(9, 10);
  EXPECT_NEAR(lo, 0.5958, 1e-4);
  EXPECT_NEAR(hi, 0.9821, 1e-4);
  // 0 of 20: (0, 0.1611); 20 of 20: (0.8389, 1).
  EXPECT_NEAR(WilsonInterval(0, 20).first, 0.0, 1e-12);
  EXPECT_NEAR(WilsonInterval(0, 20).second, 0.1611, 1e-4);
  EXPECT_NEAR(WilsonInterval(20, 20).first, 0.8389, 1e-4);
  EXPECT_NEAR(WilsonInterval(20, 20).second, 1.0, 1e-12);
  EXPECT_EQ(WilsonInterval(0, 0), (std::pair<double, double>{0.0, 1.0}));
}

}  // namespace
}  // namespace kvtier::eval
