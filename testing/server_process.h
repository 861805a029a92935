// ServerProcess: runs the real kvtier-server binary for integration tests.
//
// Start() launches it on 127.0.0.1 with a free port (--listen 127.0.0.1:0
// --port_file), captures its stderr to a file, and waits (bounded) until
// the port file appears and the channel connects. Stop() sends SIGTERM and
// waits (bounded) for the exit status. A process still running at
// destruction is killed, and so is one whose test process dies (the kernel
// kills the server when the thread that started it exits: call Start from a
// thread that lives as long as the server, e.g. the test's own).
//
// Thread-safety: not thread-safe; one test drives one ServerProcess.
#ifndef KVTIER_TESTING_SERVER_PROCESS_H_
#define KVTIER_TESTING_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvtier::testing {

// A fresh directory under the test temp dir, removed at destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

struct ExitResult {
  int exit_code = -1;  // -1 when killed by a signal
  std::string stderr_text;
};

class ServerProcess {
 public:
  // Path of the kvtier-server binary under test.
  static std::string BinaryPath();

  // `args` are passed after --listen 127.0.0.1:0 and --port_file; a later
  // --listen in `args` wins. `work_dir` holds the port and stderr files.
  static absl::StatusOr<std::unique_ptr<ServerProcess>> Start(
      const std::vector<std::string>& args, const std::string& work_dir,
      absl::Duration timeout = absl::Seconds(60));

  // Runs the binary with exactly `args` and waits for it to exit.
  // DEADLINE_EXCEEDED (and the process killed) if it is still running
  // after `timeout`.
  static absl::StatusOr<ExitResult> RunToExit(const std::vector<std::string>& args,
                                              const std::string& work_dir,
                                              absl::Duration timeout = absl::Seconds(60));

  ~ServerProcess();
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  // What the server has written to stderr so far.
  std::string StderrText() const;
  // Waits until the server's stderr shows `text`: DEADLINE_EXCEEDED (with
  // the text asked for) after `timeout`.
  absl::Status AwaitStderr(const std::string& text,
                           absl::Duration timeout = absl::Seconds(30)) const;
  std::string target() const { return "127.0.0.1:" + std::to_string(port_); }

  // Sends `signal` and returns (SIGHUP: reload the access file).
  // FAILED_PRECONDITION when the server is not running.
  absl::Status Signal(int signal);

  // Sends `signal` (SIGTERM by default), then waits up to `timeout` for the
  // exit.
  absl::StatusOr<ExitResult> Stop(absl::Duration timeout = absl::Seconds(60), int signal = SIGTERM);

 private:
  ServerProcess(pid_t pid, std::string stderr_path)
      : pid_(pid), stderr_path_(std::move(stderr_path)) {}

  pid_t pid_ = -1;
  int port_ = 0;
  std::string stderr_path_;
};

}  // namespace kvtier::testing

#endif  // KVTIER_TESTING_SERVER_PROCESS_H_
