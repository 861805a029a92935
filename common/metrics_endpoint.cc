#include "common/metrics_endpoint.h"

#include <arpa/inet.h>

#include <exception>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace kvtier {

MetricsEndpoint::MetricsEndpoint() = default;
MetricsEndpoint::MetricsEndpoint(MetricsEndpoint&&) noexcept = default;
MetricsEndpoint& MetricsEndpoint::operator=(MetricsEndpoint&&) noexcept = default;
MetricsEndpoint::~MetricsEndpoint() = default;

absl::StatusOr<MetricsEndpoint> StartMetricsEndpoint(const std::string& listen,
                                                     const std::string& what) {
  const size_t colon = listen.rfind(':');
  int port = -1;
  if (colon == std::string::npos || colon == 0 ||
      !absl::SimpleAtoi(listen.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat(what, " \"", listen, "\": must be host:port"));
  }
  std::string host = listen.substr(0, colon);
  if (host == "localhost") host = "127.0.0.1";
  in6_addr v6;
  in_addr v4;
  const bool bracketed = host.size() > 2 && host.front() == '[' && host.back() == ']';
  if (!(bracketed ? inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &v6) == 1
                  : inet_pton(AF_INET, host.c_str(), &v4) == 1)) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " \"", listen, "\": the host must be an IPv4 address, [IPv6] or localhost"));
  }
  MetricsEndpoint endpoint;
  try {
    endpoint.exposer =
        std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port), /*num_threads=*/2);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("cannot serve metrics on ", listen, ": ", e.what()));
  }
  const std::vector<int> ports = endpoint.exposer->GetListeningPorts();
  endpoint.port = ports.empty() ? 0 : ports.front();
  return endpoint;
}

}  // namespace kvtier
