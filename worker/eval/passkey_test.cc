#include "worker/eval/passkey.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvtier::eval {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr char kKeyLine[] = " The pass key is 4242. Remember it. 4242 is the pass key. ";

TEST(PasskeyTest, TemplateAndDepth) {
  auto p = BuildPasskeyPrompt({.filler_chars = 200, .depth = 0.25, .passkey = 4242});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_THAT(*p, StartsWith("There is an important info hidden inside a lot of irrelevant "
                             "text. Find it and memorize them."));
  EXPECT_THAT(*p, EndsWith(" What is the pass key? The pass key is"));
  const size_t task_end = p->find("there. ") + 7;
  const size_t key = p->find(kKeyLine);
  ASSERT_NE(key, std::string::npos);
  // 50 filler characters (25% of 200) before the key line, 150 after.
  EXPECT_EQ(key - task_end, 50u);
  EXPECT_EQ(p->substr(task_end, 19), "The grass is green.");
  const size_t suffix = key + sizeof(kKeyLine) - 1;
  EXPECT_EQ(p->find(" What is the pass key?") - suffix, 150u);
  EXPECT_EQ(p->substr(suffix, 19), "The grass is green.");
}

TEST(PasskeyTest, DepthZeroPutsTheKeyFirst) {
  auto p = BuildPasskeyPrompt({.filler_chars = 10, .depth = 0, .passkey = 1});
  ASSERT_TRUE(p.ok());
  EXPECT_THAT(*p, HasSubstr("there.  The pass key is 1. Remember it. 1 is the pass key. "
                            "The grass "));
}

TEST(PasskeyTest, RejectsBadCases) {
  EXPECT_EQ(BuildPasskeyPrompt({.filler_chars = 10, .depth = 1.5, .passkey = 7}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BuildPasskeyPrompt({.filler_chars = 10, .depth = 0.5, .passkey = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(
      BuildPasskeyPrompt({.filler_chars = 10, .depth = 0.5, .passkey = 50001}).status().code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(PasskeyTest, CasesSpanTheDepthsDeterministically) {
  const std::vector<PasskeyCase> a = PasskeyCases(100, 3, 42), b = PasskeyCases(100, 3, 42);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].depth, 0.0);
  EXPECT_EQ(a[1].depth, 0.5);
  EXPECT_EQ(a[2].depth, 1.0);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].passkey, b[i].passkey);
    EXPECT_GE(a[i].passkey, 1u);
    EXPECT_LE(a[i].passkey, 50000u);
  }
  EXPECT_NE(PasskeyCases(100, 3, 43)[0].passkey, a[0].passkey);
  EXPECT_EQ(PasskeyAnswer(4242), " 4242");
}

}  // namespace
}  // namespace kvtier::eval
