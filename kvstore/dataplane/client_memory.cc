#include "kvstore/dataplane/client_memory.h"

#include <limits.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

#ifndef SO_PEERPIDFD
#define SO_PEERPIDFD 77  // Linux 6.5; older kernels answer ENOPROTOOPT
#endif

namespace kvtier::store {
namespace {

// glibc 2.36's <sys/pidfd.h> declares these without C linkage; the system
// calls themselves are plain.
int PidfdOpen(pid_t pid) { return static_cast<int>(syscall(SYS_pidfd_open, pid, 0)); }
int PidfdSignal(int pidfd, int signal) {
  return static_cast<int>(syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0));
}

// Ranges per system call: the kernel takes at most IOV_MAX a side.
constexpr size_t kRangesPerCall = IOV_MAX;

absl::Status AccessError(int err, absl::string_view what) {
  switch (err) {
    case EPERM:
      return absl::FailedPreconditionError(absl::StrCat(
          what, ": the kernel refuses this server access to the client's memory (another "
                "user, or a ptrace restriction)"));
    case ESRCH:
      return absl::UnavailableError(absl::StrCat(what, ": the client's process has ended"));
    case ENOMEM:
      return absl::ResourceExhaustedError(absl::StrCat(what, ": ", std::strerror(err)));
    default:
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", std::strerror(err)));
  }
}

// Whether this process's effective capabilities include CAP_SYS_PTRACE
// (bit 19 of CapEff in /proc/self/status); true when it cannot tell.
bool HoldsPtraceCapability() {
  constexpr int kCapSysPtrace = 19;
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("CapEff:", 0) != 0) continue;
    uint64_t caps = 0;
    if (!absl::SimpleHexAtoi(absl::StripAsciiWhitespace(line.substr(7)), &caps)) return true;
    return (caps >> kCapSysPtrace) & 1;
  }
  return true;
}

// The peer's pid at connect, and a pidfd for that process.
absl::Status PeerProcess(int socket_fd, pid_t* pid, int* pidfd) {
  ucred cred{};
  socklen_t length = sizeof(cred);
  if (getsockopt(socket_fd, SOL_SOCKET, SO_PEERCRED, &cred, &length) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("direct transfers: no peer credentials: ", std::strerror(errno)));
  }
  // The kernel checks each cross-memory call against the target's
  // credentials at that moment, which protects a process that has since
  // run a setuid program from a server without privilege over it; a
  // server with that privilege (another user's, or CAP_SYS_PTRACE) could
  // be pointed by a client at the image it exec'd. So only a client of
  // the server's own user, and only a server that holds no such privilege
  // beyond root's over root's own clients, gets direct transfers.
  if (cred.uid != geteuid()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "direct transfers: the client runs as uid %d, this server as %d", cred.uid, geteuid()));
  }
  if (geteuid() != 0 && HoldsPtraceCapability()) {
    return absl::FailedPreconditionError(
        "direct transfers: this server holds CAP_SYS_PTRACE, which the kernel's check of "
        "each copy would not hold against a client's setuid image");
  }
  if (cred.pid <= 0) {
    return absl::FailedPreconditionError(
        "direct transfers: the client's process is not visible here (another pid namespace)");
  }
  int fd = -1;
  length = sizeof(fd);
  // Race-free where the kernel offers it: the process that connected, even
  // if it has ended and its pid been reused since.
  if (getsockopt(socket_fd, SOL_SOCKET, SO_PEERPIDFD, &fd, &length) != 0 || fd < 0) {
    fd = PidfdOpen(cred.pid);
    if (fd < 0) {
      return AccessError(errno, "direct transfers: cannot hold the client's process");
    }
  }
  *pid = cred.pid;
  *pidfd = fd;
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClientMemory>> ClientMemory::Attach(
    int socket_fd, uint64_t probe_address, absl::Span<const uint8_t> secret) {
  if (probe_address == 0 || secret.empty()) {
    return absl::InvalidArgumentError("direct transfers: no probe address");
  }
  pid_t pid = 0;
  int pidfd = -1;
  if (absl::Status s = PeerProcess(socket_fd, &pid, &pidfd); !s.ok()) return s;
  std::unique_ptr<ClientMemory> memory(new ClientMemory(pid, pidfd));
  std::vector<uint8_t> seen(secret.size());
  const ClientRange from{.address = probe_address, .bytes = seen.size()};
  const absl::Span<uint8_t> to(seen);
  if (absl::Status s = memory->Read({&from, 1}, {&to, 1}); !s.ok()) return s;
  if (CRYPTO_memcmp(seen.data(), secret.data(), secret.size()) != 0) {
    return absl::PermissionDeniedError(
        "direct transfers: the client's process does not hold the lane's ticket there");
  }
  return memory;
}

ClientMemory::~ClientMemory() { close(pidfd_); }

absl::Status ClientMemory::CheckAlive() const {
  // Signal 0 delivers nothing; ESRCH once the process has been reaped.
  if (PidfdSignal(pidfd_, 0) != 0 && errno == ESRCH) {
    return absl::UnavailableError("direct transfers: the client's process has ended");
  }
  return absl::OkStatus();
}

template <typename Local>
absl::Status ClientMemory::Transfer(bool write, absl::Span<const Local> local,
                                    absl::Span<const ClientRange> remote) const {
  if (local.size() != remote.size()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "direct transfers: %d local buffers for %d client ranges", local.size(), remote.size()));
  }
  for (size_t i = 0; i < local.size(); ++i) {
    if (local[i].size() != remote[i].bytes) {
      return absl::InvalidArgumentError(
          absl::StrFormat("direct transfers: range %d is %d bytes in the client, %d here", i,
                          remote[i].bytes, local[i].size()));
    }
  }
  std::vector<iovec> mine;
  std::vector<iovec> theirs;
  for (size_t begin = 0; begin < local.size(); begin += kRangesPerCall) {
    const size_t end = std::min(local.size(), begin + kRangesPerCall);
    mine.clear();
    theirs.clear();
    uint64_t total = 0;
    for (size_t i = begin; i < end; ++i) {
      mine.push_back({.iov_base = const_cast<uint8_t*>(local[i].data()),
                      .iov_len = local[i].size()});
      theirs.push_back({.iov_base = reinterpret_cast<void*>(remote[i].address),
                        .iov_len = remote[i].bytes});
      total += remote[i].bytes;
    }
    // Checked before every call: a pid is reused only after its process
    // has been reaped, which the pidfd sees.
    if (absl::Status s = CheckAlive(); !s.ok()) return s;
    const ssize_t n = write ? process_vm_writev(pid_, mine.data(), mine.size(), theirs.data(),
                                                theirs.size(), 0)
                            : process_vm_readv(pid_, mine.data(), mine.size(), theirs.data(),
                                               theirs.size(), 0);
    if (n == static_cast<ssize_t>(total)) continue;
    // A transfer stops at the first range it cannot complete (ranges are
    // never split), so the bytes done name the range that failed.
    const int err = n < 0 ? errno : EFAULT;
    size_t failed = begin;
    for (uint64_t done = n < 0 ? 0 : static_cast<uint64_t>(n);
         failed + 1 < end && done >= remote[failed].bytes; ++failed) {
      done -= remote[failed].bytes;
    }
    return AccessError(err, absl::StrFormat("direct transfers: %s the client's range %d "
                                            "(%d bytes at 0x%x)",
                                            write ? "writing" : "reading", failed,
                                            remote[failed].bytes, remote[failed].address));
  }
  return absl::OkStatus();
}

absl::Status ClientMemory::Read(absl::Span<const ClientRange> from,
                                absl::Span<const absl::Span<uint8_t>> to) const {
  return Transfer<absl::Span<uint8_t>>(/*write=*/false, to, from);
}

absl::Status ClientMemory::Write(absl::Span<const absl::Span<const uint8_t>> from,
                                 absl::Span<const ClientRange> to) const {
  return Transfer<absl::Span<const uint8_t>>(/*write=*/true, from, to);
}

}  // namespace kvtier::store
