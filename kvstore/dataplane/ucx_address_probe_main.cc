// kvtier-ucx-probe: creates a UCX endpoint from the worker address on stdin
// and, when a remote key follows, unpacks it on that endpoint; exits 0, or
// prints UCX's error and exits 1. kvtier-server runs it on every client
// address and key before its own UCX sees the bytes (ucx_address_probe.h);
// whatever makes UCX abort or crash, does so to this process.
//
//   kvtier-ucx-probe [--ucx_transports=T] [--ucx_mutex_locks=0|1] < input
//
// Input (ProbeInput): a little-endian u32 address length, the address, then
// the remote key (possibly empty).
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

// Far above any worker address and key (a few hundred bytes).
constexpr size_t kMaxInputBytes = 128 << 10;

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
  std::string input;
  char buffer[4096];
  ssize_t n;
  while ((n = read(STDIN_FILENO, buffer, sizeof(buffer))) > 0) {
    input.append(buffer, static_cast<size_t>(n));
    if (input.size() > kMaxInputBytes) return Fail("input too long");
  }
  if (input.size() < 4) return Fail("input shorter than its length field");
  uint32_t address_bytes = 0;
  for (int i = 0; i < 4; ++i) {
    address_bytes |= uint32_t{static_cast<uint8_t>(input[i])} << (8 * i);
  }
  if (address_bytes > input.size() - 4) return Fail("address length beyond the input");
  const std::string address = input.substr(4, address_bytes);
  const std::string rkey = input.substr(4 + address_bytes);
  absl::StatusOr<std::unique_ptr<kvtier::ucx::UcxContext>> context =
      kvtier::ucx::UcxContext::Create(options);
  if (!context.ok()) return Fail(std::string(context.status().message()));
  absl::StatusOr<std::unique_ptr<kvtier::ucx::UcxWorker>> worker =
      kvtier::ucx::UcxWorker::Create(**context);
  if (!worker.ok()) return Fail(std::string(worker.status().message()));
  absl::StatusOr<std::unique_ptr<kvtier::ucx::UcxEndpoint>> endpoint =
      kvtier::ucx::UcxEndpoint::Connect(worker->get(), address);
  if (!endpoint.ok()) return Fail(std::string(endpoint.status().message()));
  if (!rkey.empty()) {
    absl::StatusOr<std::unique_ptr<kvtier::ucx::UcxRemoteKey>> key = (*endpoint)->UnpackKey(rkey);
    if (!key.ok()) return Fail(std::string(key.status().message()));
  }
  (*endpoint)->Close();
  return 0;
}
