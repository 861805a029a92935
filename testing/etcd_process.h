// Child processes and a real etcd (Debian's etcd-server) for the suites of
// the cluster: membership (kvstore/cluster) and the cluster of real nodes
// (tests/cluster_test.cc).
//
// Children get PR_SET_PDEATHSIG(SIGKILL), so a crashing test leaves none
// behind (start them from the test's own thread). Every wait is bounded.
//
// Thread-safety: not thread-safe; one test drives each object.
#ifndef KVTIER_TESTING_ETCD_PROCESS_H_
#define KVTIER_TESTING_ETCD_PROCESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "testing/loopback.h"

namespace kvtier::testing {

// A child process, killed (SIGKILL) and reaped at destruction.
class ChildProcess {
 public:
  // Runs argv[0] with `argv`. stderr goes to `log_path`; stdout too unless
  // `pipe_stdio`, which gives the test the child's stdin and stdout.
  static absl::StatusOr<std::unique_ptr<ChildProcess>> Spawn(const std::vector<std::string>& argv,
                                                             const std::string& log_path,
                                                             bool pipe_stdio);
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  absl::Status Signal(int signal);
  // Exit code (-1 when killed by a signal); DEADLINE_EXCEEDED if still
  // running after `timeout`.
  absl::StatusOr<int> Wait(absl::Duration timeout);
  // SIGKILL and reap.
  void Kill();

  // With pipe_stdio only.
  absl::Status WriteLine(const std::string& line);
  absl::StatusOr<std::string> ReadLine(absl::Duration timeout);
  void CloseStdin();

 private:
  ChildProcess(pid_t pid, int stdin_fd, int stdout_fd)
      : pid_(pid), stdin_fd_(stdin_fd), stdout_fd_(stdout_fd) {}

  pid_t pid_;
  int stdin_fd_;
  int stdout_fd_;
  std::string buffered_;
};

// /usr/bin/etcd (Debian's etcd-server) on free loopback ports, with its data
// directory and log under `dir`.
class EtcdProcess {
 public:
  static constexpr const char* kBinary = "/usr/bin/etcd";

  // Starts etcd and waits until it serves a read.
  static absl::StatusOr<std::unique_ptr<EtcdProcess>> Start(const std::string& dir);

  // host:port of the client endpoint.
  std::string endpoint() const { return "127.0.0.1:" + std::to_string(client_port_); }
  // SIGKILL, as a crash would.
  void Kill();
  // Starts again on the same data directory and ports.
  absl::Status Restart();
  std::string Log() const;

 private:
  EtcdProcess(std::string dir, int client_port, int peer_port)
      : dir_(std::move(dir)), client_port_(client_port), peer_port_(peer_port) {}
  absl::Status Launch();

  const std::string dir_;
  const int client_port_;
  const int peer_port_;
  std::unique_ptr<ChildProcess> process_;
};

}  // namespace kvtier::testing

#endif  // KVTIER_TESTING_ETCD_PROCESS_H_
