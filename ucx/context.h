// UcxContext: the RAII owner of a UCP context, started with the UCX settings
// kvtier chooses (UcxOptions).
//
//   ASSIGN_OR_RETURN(auto context, UcxContext::Create(UcxOptions{}));
//   ASSIGN_OR_RETURN(auto worker, UcxWorker::Create(*context));   // worker.h
//
// Thread-safety: thread-safe after Create. Destruction order: everything
// using the context (workers, memory) first.
#ifndef KVTIER_UCX_CONTEXT_H_
#define KVTIER_UCX_CONTEXT_H_

#include <ucp/api/ucp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvtier::ucx {

// The two UCX settings kvtier does not leave to UCX's own defaults. Each is
// applied only where the environment leaves its UCX_* variable unset: the
// environment stays the way to tune UCX for one deployment, as UCX's own
// tools expect.
struct UcxOptions {
  // UCX_TLS: the transports UCX may pick from. Default "^tcp", every
  // transport but UCX's tcp: StoreClient's automatic mode sends bytes
  // inline where UCX would have only TCP (measured faster,
  // kvstore/dataplane/DATA_PLANE.md), and with tcp in the set an endpoint to
  // a peer on this host picks TCP over shared memory, whose wireup makes UCX
  // 1.13 abort a process whose peer exits mid-wireup. "tcp" or
  // "posix,cma,self" select transports explicitly. Must not be empty.
  std::string transports = "^tcp";
  // UCX_USE_MT_MUTEX: the lock of a worker shared by several threads.
  // Default true, a mutex; false, UCX's spinlock. Every kvtier worker is
  // shared by its callers and a progress thread, and a spinlock holder
  // preempted on a busy host left the other thread spinning out its time
  // slice (half of all client CPU and p99 of 7-12 ms with 8 clients on 2
  // cores).
  bool mutex_locks = true;
  // Shared-memory transports (sysv, posix, cma, and any other intra-node
  // device). Default true. False excludes them whatever UCX_TLS and
  // UCX_SHM_DEVICES say: through them a peer's worker address and remote
  // keys name a process and memory segments on this host, so a hostile
  // peer could make this process read or write another process's memory
  // (or its own). Network transports (RDMA, TCP) reach only the peer.
  bool shared_memory = true;

  // INVALID_ARGUMENT for empty transports or characters UCX_TLS cannot hold.
  absl::Status Validate() const;
};

class UcxContext {
 public:
  // A context with RMA, tag-matching, active-message and wakeup features.
  // INVALID_ARGUMENT for bad options; UNAVAILABLE/INTERNAL (converted from
  // UCX) when UCX cannot start.
  static absl::StatusOr<std::unique_ptr<UcxContext>> Create(const UcxOptions& options);
  // The configuration Create starts UCX with, one `UCX_NAME=value` line per
  // setting (as `ucx_info -c` prints it): the environment's UCX_* settings
  // and `options` for the two it leaves unset.
  static absl::StatusOr<std::string> DescribeConfig(const UcxOptions& options);
  ~UcxContext();
  UcxContext(const UcxContext&) = delete;
  UcxContext& operator=(const UcxContext&) = delete;

  ucp_context_h get() const { return context_; }

 private:
  explicit UcxContext(ucp_context_h context) : context_(context) {}
  ucp_context_h const context_;
};

}  // namespace kvtier::ucx

#endif  // KVTIER_UCX_CONTEXT_H_
