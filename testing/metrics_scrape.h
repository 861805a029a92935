// Reading a Prometheus /metrics endpoint in tests: an HTTP GET on
// loopback, and one sample's value out of the text format.
#ifndef KVTIER_TESTING_METRICS_SCRAPE_H_
#define KVTIER_TESTING_METRICS_SCRAPE_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_split.h"

namespace kvtier::testing {

// The whole reply (status line, headers, body) to GET /metrics on
// 127.0.0.1:port, with HTTP Basic credentials when `user_and_password`
// ("user:password") is not empty; empty when the connection fails.
inline std::string ScrapeMetrics(int port, const std::string& user_and_password = "") {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return "";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::string reply;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) {
    std::string request = "GET /metrics HTTP/1.0\r\nHost: localhost\r\n";
    if (!user_and_password.empty()) {
      request += "Authorization: Basic " + absl::Base64Escape(user_and_password) + "\r\n";
    }
    request += "\r\n";
    if (write(fd, request.data(), request.size()) == static_cast<ssize_t>(request.size())) {
      char buffer[8192];
      for (ssize_t n; (n = read(fd, buffer, sizeof(buffer))) > 0;) reply.append(buffer, n);
    }
  }
  close(fd);
  return reply;
}

// The value of the sample whose line starts with `sample` ("name" or
// "name{labels}"), or "absent".
inline std::string MetricValue(const std::string& text, const std::string& sample) {
  const std::vector<std::string> lines = absl::StrSplit(text, '\n');
  for (const std::string& line : lines) {
    if (line.starts_with(sample + " ")) return line.substr(sample.size() + 1);
  }
  return "absent";
}

}  // namespace kvtier::testing

#endif  // KVTIER_TESTING_METRICS_SCRAPE_H_
