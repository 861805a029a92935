// Log lines as JSON: exact objects, escaping, key=value fields, and a
// real LogMessage written to stderr.
#include "common/log.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace kvtier {
namespace {

TEST(JsonLogTest, AnEventIsOneObjectWithItsFields) {
  EXPECT_EQ(JsonLogLine("2026-12-05T10:00:00.000001Z", "INFO", "store.cc:42",
                        "recovered pages=12 lost_pages=0"),
            "{\"time\":\"2026-12-05T10:00:00.000001Z\",\"level\":\"INFO\","
            "\"source\":\"store.cc:42\",\"message\":\"recovered pages=12 lost_pages=0\","
            "\"fields\":{\"pages\":\"12\",\"lost_pages\":\"0\"}}");
}

TEST(JsonLogTest, EveryByteOutsidePrintableAsciiIsEscaped) {
  const std::string message = std::string("say \"hi\"\\ now\n\ttab \x01 \xc3\xa9 ") + '\0' + "end";
  EXPECT_EQ(JsonLogLine("t", "WARN", "a.cc:1", message),
            "{\"time\":\"t\",\"level\":\"WARN\",\"source\":\"a.cc:1\","
            "\"message\":\"say \\\"hi\\\"\\\\ now\\u000a\\u0009tab \\u0001 \\u00c3\\u00a9 "
            "\\u0000end\",\"fields\":{}}");
}

TEST(JsonLogTest, FieldsAreKeyValueWordsAndTheFirstOfAKeyWins) {
  EXPECT_EQ(JsonLogLine("t", "INFO", "a.cc:1", "a=1 =x b= c=\"q\" a=2 bad-key=3 url=http://x?y=z"),
            "{\"time\":\"t\",\"level\":\"INFO\",\"source\":\"a.cc:1\","
            "\"message\":\"a=1 =x b= c=\\\"q\\\" a=2 bad-key=3 url=http://x?y=z\","
            "\"fields\":{\"a\":\"1\",\"b\":\"\",\"c\":\"\\\"q\\\"\",\"url\":\"http://x?y=z\"}}");
}

// A real line through stderr (redirected into a file for the test).
TEST(JsonLogTest, LogMessagesFollowTheFormat) {
  char path[] = "/tmp/kvtier_log_test_XXXXXX";
  const int fd = mkstemp(path);
  ASSERT_GE(fd, 0);
  const int saved = dup(STDERR_FILENO);
  ASSERT_GE(dup2(fd, STDERR_FILENO), 0);
  SetLogFormat(LogFormat::kJson);
  KVTIER_LOG(INFO) << "started port=50051";
  SetLogFormat(LogFormat::kText);
  KVTIER_LOG(INFO) << "plain";
  dup2(saved, STDERR_FILENO);
  close(saved);
  std::string text;
  char buffer[4096];
  lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) text.append(buffer, n);
  close(fd);
  unlink(path);
  const size_t newline = text.find('\n');
  ASSERT_NE(newline, std::string::npos);
  const std::string json = text.substr(0, newline);
  EXPECT_TRUE(json.starts_with("{\"time\":\"")) << json;
  EXPECT_NE(json.find("\"level\":\"INFO\",\"source\":\"log_test.cc:"), std::string::npos) << json;
  EXPECT_TRUE(json.ends_with("\"message\":\"started port=50051\",\"fields\":{\"port\":\"50051\"}}"))
      << json;
  const std::string plain = text.substr(newline + 1);
  EXPECT_NE(plain.find(" INFO log_test.cc:"), std::string::npos) << plain;
  EXPECT_TRUE(plain.ends_with("] plain\n")) << plain;
}

}  // namespace
}  // namespace kvtier
