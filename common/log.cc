#include "common/log.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <set>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace kvtier {
namespace {

std::atomic<int> g_min_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "DEBUG";
    case LogLevel::kInfo: return "INFO";
    case LogLevel::kWarning: return "WARN";
    case LogLevel::kError: return "ERROR";
  }
  return "?";
}

// `text` as a JSON string, quotes included; bytes outside printable ASCII
// become \u00XX.
void AppendJsonString(std::string* out, const std::string& text) {
  out->push_back('"');
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out->push_back('\\');
      out->push_back(static_cast<char>(c));
    } else if (c >= 0x20 && c < 0x7f) {
      out->push_back(static_cast<char>(c));
    } else {
      char escaped[8];
      std::snprintf(escaped, sizeof(escaped), "\\u%04x", c);
      out->append(escaped);
    }
  }
  out->push_back('"');
}

bool IsKeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == '.';
}

}  // namespace

void SetMinLogLevel(LogLevel level) { g_min_level.store(static_cast<int>(level)); }
LogLevel MinLogLevel() { return static_cast<LogLevel>(g_min_level.load()); }
void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }
LogFormat CurrentLogFormat() { return static_cast<LogFormat>(g_format.load()); }

std::string JsonLogLine(const std::string& time, const char* level, const std::string& source,
                        const std::string& message) {
  std::string out = "{\"time\":";
  AppendJsonString(&out, time);
  out += ",\"level\":";
  AppendJsonString(&out, level);
  out += ",\"source\":";
  AppendJsonString(&out, source);
  out += ",\"message\":";
  AppendJsonString(&out, message);
  out += ",\"fields\":{";
  std::set<std::string> keys;
  size_t at = 0;
  while (at < message.size()) {
    const size_t end = std::min(message.find(' ', at), message.size());
    const std::string word = message.substr(at, end - at);
    at = end + 1;
    const size_t eq = word.find('=');
    if (eq == 0 || eq == std::string::npos) continue;
    const std::string key = word.substr(0, eq);
    bool key_ok = true;
    for (char c : key) key_ok = key_ok && IsKeyChar(c);
    if (!key_ok || !keys.insert(key).second) continue;
    if (keys.size() > 1) out.push_back(',');
    AppendJsonString(&out, key);
    out.push_back(':');
    AppendJsonString(&out, word.substr(eq + 1));
  }
  out += "}}";
  return out;
}

LogMessage::LogMessage(LogLevel level, const char* file, int line)
    : level_(level), format_(CurrentLogFormat()) {
  const char* base = std::strrchr(file, '/');
  time_ = absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone());
  source_ = std::string(base ? base + 1 : file) + ":" + std::to_string(line);
  if (format_ == LogFormat::kText) {
    stream_ << time_ << ' ' << LevelName(level_) << ' ' << source_ << "] ";
  }
}

LogMessage::~LogMessage() {
  std::string line = format_ == LogFormat::kJson
                         ? JsonLogLine(time_, LevelName(level_), source_, stream_.str())
                         : stream_.str();
  line.push_back('\n');
  // A log line that cannot be written has nowhere else to go.
  [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
}

}  // namespace kvtier
