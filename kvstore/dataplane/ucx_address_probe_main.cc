// kvtier-ucx-probe: creates a UCX endpoint from the worker address on stdin
// and exits 0, or prints UCX's error and exits 1. kvtier-server runs it on
// every client address before its own UCX sees the bytes
// (ucx_address_probe.h); whatever makes UCX abort, aborts this process.
//
//   kvtier-ucx-probe [--ucx_transports=T] [--ucx_mutex_locks=0|1] < address
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "ucx/context.h"
#include "ucx/endpoint.h"
#include "ucx/worker.h"

namespace {

// Far above any worker address (a few hundred bytes).
constexpr size_t kMaxAddressBytes = 64 << 10;

int Fail(const std::string& message) {
  std::fprintf(stderr, "%s\n", message.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  kvtier::ucx::UcxOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (absl::StartsWith(arg, "--ucx_transports=")) {
      options.transports = arg.substr(sizeof("--ucx_transports=") - 1);
    } else if (arg == "--ucx_mutex_locks=0" || arg == "--ucx_mutex_locks=1") {
      options.mutex_locks = arg.back() == '1';
    } else {
      return Fail("usage: kvtier-ucx-probe [--ucx_transports=T] [--ucx_mutex_locks=0|1] < address");
    }
  }
  std::string address;
  char buffer[4096];
  ssize_t n;
  while ((n = read(STDIN_FILENO, buffer, sizeof(buffer))) > 0) {
    address.append(buffer, static_cast<size_t>(n));
    if (address.size() > kMaxAddressBytes) return Fail("address too long");
  }
  absl::StatusOr<std::unique_ptr<kvtier::ucx::UcxContext>> context =
      kvtier::ucx::UcxContext::Create(options);
  if (!context.ok()) return Fail(std::string(context.status().message()));
  absl::StatusOr<std::unique_ptr<kvtier::ucx::UcxWorker>> worker =
      kvtier::ucx::UcxWorker::Create(**context);
  if (!worker.ok()) return Fail(std::string(worker.status().message()));
  absl::StatusOr<std::unique_ptr<kvtier::ucx::UcxEndpoint>> endpoint =
      kvtier::ucx::UcxEndpoint::Connect(worker->get(), address);
  if (!endpoint.ok()) return Fail(std::string(endpoint.status().message()));
  (*endpoint)->Close();
  return 0;
}
