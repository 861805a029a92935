// A Prometheus /metrics endpoint (prometheus-cpp's exposer) on a port of
// its own, shared by kvtier-server (kvstore/metrics) and the worker's
// programs (worker/metrics).
//
//   ASSIGN_OR_RETURN(MetricsEndpoint endpoint, StartMetricsEndpoint("127.0.0.1:0"));
//   endpoint.exposer->RegisterCollectable(collector);
//
// The exposer takes a numeric address and quietly binds every interface
// for one it cannot parse, so only literal addresses pass: an IPv4
// address, [IPv6], or localhost (127.0.0.1). The endpoint itself has no
// authentication (kvstore/metrics/server_metrics.h adds it).
#ifndef KVTIER_COMMON_METRICS_ENDPOINT_H_
#define KVTIER_COMMON_METRICS_ENDPOINT_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace prometheus {
class Exposer;
}  // namespace prometheus

namespace kvtier {

struct MetricsEndpoint {
  std::unique_ptr<prometheus::Exposer> exposer;
  int port = 0;  // the bound port (0 in `listen` picks one)

  MetricsEndpoint();
  MetricsEndpoint(MetricsEndpoint&&) noexcept;
  MetricsEndpoint& operator=(MetricsEndpoint&&) noexcept;
  ~MetricsEndpoint();
};

// INVALID_ARGUMENT for a malformed address (`what` names the setting in
// the message), UNAVAILABLE when it cannot be bound.
absl::StatusOr<MetricsEndpoint> StartMetricsEndpoint(const std::string& listen,
                                                     const std::string& what = "metrics_listen");

}  // namespace kvtier

#endif  // KVTIER_COMMON_METRICS_ENDPOINT_H_
