// ClientMemory: the memory of a local lane's client process, read and
// written by the server with cross-memory attach (process_vm_readv and
// process_vm_writev), so that a page moves in one copy between the
// client's own buffer and the server's arena (DATA_PLANE.md, "Direct
// transfers"). The client learns nothing of the server's memory; the
// server acts only on the process at the other end of the lane.
//
// Which process: the peer of the lane's socket as the kernel recorded it
// at connect (SO_PEERPIDFD where the kernel has it, else SO_PEERCRED's pid
// opened as a pidfd), held by that pidfd for the lane's life. Before every
// transfer the pidfd says whether that process still runs, so a pid the
// kernel has since given to another process is never touched. At attach
// the server reads the lane's ticket back from the address the client
// names: only the process that holds the ticket passes, and only where
// the kernel lets the server access it (same user, no ptrace restriction
// in the way). The client must run as the server's user, and a server
// other than root must not hold CAP_SYS_PTRACE: the kernel checks each
// copy against the process's credentials at that moment, which keeps a
// setuid program the client exec's out of reach of a server without
// privilege over it, and only of such a server. Otherwise the lane works
// without direct transfers.
//
// Thread-safety: const methods may be called concurrently.
#ifndef KVTIER_KVSTORE_DATAPLANE_CLIENT_MEMORY_H_
#define KVTIER_KVSTORE_DATAPLANE_CLIENT_MEMORY_H_

#include <sys/types.h>

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace kvtier::store {

// A range of the client's address space.
struct ClientRange {
  uint64_t address = 0;
  uint64_t bytes = 0;
};

class ClientMemory {
 public:
  // The peer of `socket_fd` (a connected Unix socket), if it holds
  // `secret` at `probe_address`. FAILED_PRECONDITION when the kernel
  // names no peer process here (another pid namespace) or refuses the
  // access; PERMISSION_DENIED when the bytes there are not `secret`.
  static absl::StatusOr<std::unique_ptr<ClientMemory>> Attach(int socket_fd,
                                                              uint64_t probe_address,
                                                              absl::Span<const uint8_t> secret);
  ~ClientMemory();
  ClientMemory(const ClientMemory&) = delete;
  ClientMemory& operator=(const ClientMemory&) = delete;

  // Copies from[i] into to[i]; each pair must be of equal size
  // (INVALID_ARGUMENT before anything is copied). INVALID_ARGUMENT naming
  // the first range the client's process does not map readable; some of
  // `to` may have been written then. UNAVAILABLE once the process ended.
  absl::Status Read(absl::Span<const ClientRange> from,
                    absl::Span<const absl::Span<uint8_t>> to) const;
  // Copies from[i] into to[i], likewise; a range the process does not map
  // writable is INVALID_ARGUMENT.
  absl::Status Write(absl::Span<const absl::Span<const uint8_t>> from,
                     absl::Span<const ClientRange> to) const;

  pid_t pid() const { return pid_; }

 private:
  ClientMemory(pid_t pid, int pidfd) : pid_(pid), pidfd_(pidfd) {}
  // UNAVAILABLE when the process has ended (its pid may be another's now).
  absl::Status CheckAlive() const;
  template <typename Local>
  absl::Status Transfer(bool write, absl::Span<const Local> local,
                        absl::Span<const ClientRange> remote) const;

  const pid_t pid_;
  const int pidfd_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_DATAPLANE_CLIENT_MEMORY_H_
