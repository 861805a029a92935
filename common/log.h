// Structured logging to stderr: one line per event,
//   2026-11-24T12:00:00.123456Z INFO store.cc:42] message key=value ...
// Lines are written with a single write(2), so concurrent lines never mix.
//
//   KVTIER_LOG(INFO) << "recovered pages=" << n;
#ifndef KVTIER_COMMON_LOG_H_
#define KVTIER_COMMON_LOG_H_

#include <sstream>

namespace kvtier {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Lines below this level are dropped. Default kInfo; thread-safe.
void SetMinLogLevel(LogLevel level);
LogLevel MinLogLevel();

class LogMessage {
 public:
  LogMessage(LogLevel level, const char* file, int line);
  ~LogMessage();
  LogMessage(const LogMessage&) = delete;
  LogMessage& operator=(const LogMessage&) = delete;
  std::ostream& stream() { return stream_; }

 private:
  LogLevel level_;
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
