#include "common/json_text.h"

#include <string>

#include "gtest/gtest.h"

namespace kvtier {
namespace {

TEST(JsonQuotedTest, EscapesQuotesBackslashesAndControls) {
  EXPECT_EQ(JsonQuoted(""), "\"\"");
  EXPECT_EQ(JsonQuoted("plain text, it's fine"), "\"plain text, it's fine\"");
  EXPECT_EQ(JsonQuoted("a \"b\" \\c"), "\"a \\\"b\\\" \\\\c\"");
  EXPECT_EQ(JsonQuoted("x\ny\tz\r"), "\"x\\ny\\tz\\u000d\"");
  EXPECT_EQ(JsonQuoted(std::string("a\0b", 3)), "\"a\\u0000b\"");
  EXPECT_EQ(JsonQuoted("\x7f"), "\"\\u007f\"");
}

TEST(JsonQuotedTest, KeepsValidUtf8AndReplacesBrokenBytes) {
  EXPECT_EQ(JsonQuoted("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82"),
            "\"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x99\x82\"");
  // A lone continuation byte, a sequence cut short, an overlong '/', a
  // surrogate, and a byte that never starts a sequence.
  EXPECT_EQ(JsonQuoted("a\x80z"), "\"a\\ufffdz\"");
  EXPECT_EQ(JsonQuoted("\xe2\x82"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonQuoted("\xc0\xaf"), "\"\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonQuoted("\xed\xa0\x80"), "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT_EQ(JsonQuoted("\xff"), "\"\\ufffd\"");
}

}  // namespace
}  // namespace kvtier
