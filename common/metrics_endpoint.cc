#include "common/metrics_endpoint.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>

#include <cerrno>
#include <cstddef>
#include <exception>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "prometheus/exposer.h"

namespace {

// Bytes of static TLS of the objects loaded now: what glibc carves out of
// every thread's stack (each block rounded up to its alignment).
size_t StaticTlsBytes() {
  size_t total = 0;
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) {
        for (int i = 0; i < info->dlpi_phnum; ++i) {
          const ElfW(Phdr)& h = info->dlpi_phdr[i];
          if (h.p_type != PT_TLS) continue;
          const size_t align = h.p_align > 0 ? h.p_align : 1;
          *static_cast<size_t*>(data) += (h.p_memsz + align - 1) / align * align;
        }
        return 0;
      },
      &total);
  return total;
}

}  // namespace

// civetweb, the exposer's HTTP server as Debian builds it, sizes its
// threads' stacks at 100 KiB (pthread_attr_setstacksize), and glibc takes
// each thread's static TLS out of the stack it is given. A worker program
// loads OpenBLAS, whose TLS block alone is 60 KiB, so the exposer's threads
// overflowed their stacks on the first scrape (in vsnprintf). This
// definition takes the place of glibc's in every program that serves
// metrics (its CMakeLists.txt exports it from the executable) and adds the
// static TLS to each explicitly sized stack, so that a thread can use the
// stack its creator asked for, as threads with glibc's default size can.
extern "C" int pthread_attr_setstacksize(pthread_attr_t* attr, size_t stacksize) {
  using SetStackSize = int (*)(pthread_attr_t*, size_t);
  static const SetStackSize glibc =
      reinterpret_cast<SetStackSize>(dlsym(RTLD_NEXT, "pthread_attr_setstacksize"));
  static const size_t tls = StaticTlsBytes();
  if (glibc == nullptr) return ENOSYS;
  return glibc(attr, stacksize + tls);
}

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
