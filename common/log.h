// Structured logging to stderr: one line per event, as text
//   2026-11-24T12:00:00.123456Z INFO store.cc:42] message key=value ...
// or, with SetLogFormat(LogFormat::kJson), as one JSON object per line
//   {"time":"2026-11-24T12:00:00.123456Z","level":"INFO","source":"store.cc:42",
//    "message":"message key=value ...","fields":{"key":"value"}}
// where `fields` holds the message's key=value words (values as strings;
// a key given twice keeps its first value), and every byte that is not
// printable ASCII is escaped (\uXXXX), so each line is valid JSON whatever
// the message holds. Lines are written with a single write(2), so
// concurrent lines never mix.
//
//   KVTIER_LOG(INFO) << "recovered pages=" << n;
#ifndef KVTIER_COMMON_LOG_H_
#define KVTIER_COMMON_LOG_H_

#include <sstream>
#include <string>

namespace kvtier {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below this level are dropped. Default kInfo; thread-safe.
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();

enum class LogFormat { kText = 0, kJson = 1 };
// Default kText; thread-safe.
void SetLogFormat(LogFormat format);
LogFormat CurrentLogFormat();

// The JSON line (without its newline) of one event; for tests.
std::string JsonLogLine(const std::string& time, const char* level, const std::string& source,
                        const std::string& message);

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
  LogFormat format_;
  std::string time_;
  std::string source_;
  std::ostringstream stream_;
};

}  // namespace kvtier

#define KVTIER_LOG_LEVEL_DEBUG ::kvtier::LogLevel::kDebug
#define KVTIER_LOG_LEVEL_INFO ::kvtier::LogLevel::kInfo
#define KVTIER_LOG_LEVEL_WARNING ::kvtier::LogLevel::kWarning
#define KVTIER_LOG_LEVEL_ERROR ::kvtier::LogLevel::kError

#define KVTIER_LOG(level)                                              \
  if (KVTIER_LOG_LEVEL_##level < ::kvtier::MinLogLevel()) {            \
  } else                                                               \
    ::kvtier::LogMessage(KVTIER_LOG_LEVEL_##level, __FILE__, __LINE__).stream()

#endif  // KVTIER_COMMON_LOG_H_
