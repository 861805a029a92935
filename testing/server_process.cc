#include "testing/server_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "common/absl_cycle_clock.h"
#include "absl/time/clock.h"
#include "testing/loopback.h"

#ifndef KVTIER_SERVER_PATH
#error "KVTIER_SERVER_PATH must name the kvtier-server binary"
#endif

namespace kvtier::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& args,
                            const std::string& stderr_path) {
  std::vector<char*> argv;
  std::string binary = ServerProcess::BinaryPath();
  argv.push_back(binary.data());
  std::vector<std::string> copy = args;
  for (std::string& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Opened before fork: the child may only make async-signal-safe calls.
  const int err_fd = open(stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (err_fd < 0) return absl::InternalError(absl::StrCat("cannot open ", stderr_path));
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    close(err_fd);
    return absl::InternalError("fork failed");
  }
  if (pid == 0) {
    // A test that crashes must not leave its server running.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(err_fd, STDERR_FILENO);
    // Never hold the test's own stdout open (a runner waits for its EOF).
    const int null_fd = open("/dev/null", O_WRONLY);
    if (null_fd >= 0) dup2(null_fd, STDOUT_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(err_fd);
  return pid;
}

// Waits for `pid` to exit, polling until `deadline`. The polling interval
// only bounds the wait; no result depends on it.
absl::StatusOr<int> WaitExit(pid_t pid, absl::Time deadline) {
  while (true) {
    int status = 0;
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (r < 0) return absl::InternalError("waitpid failed");
    if (absl::Now() > deadline) return absl::DeadlineExceededError("process did not exit");
    absl::SleepFor(absl::Milliseconds(10));
  }
}

}  // namespace

TempDir::TempDir() {
  static std::atomic<int> counter{0};
  const char* base = std::getenv("TEST_TMPDIR");
  path_ = absl::StrCat(base != nullptr ? base : "/tmp", "/kvtier-it-", getpid(), "-",
                       counter.fetch_add(1));
  std::filesystem::remove_all(path_);
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string ServerProcess::BinaryPath() { return KVTIER_SERVER_PATH; }

absl::StatusOr<std::unique_ptr<ServerProcess>> ServerProcess::Start(
    const std::vector<std::string>& args, const std::string& work_dir, absl::Duration timeout) {
  const std::string port_file = work_dir + "/port";
  const std::string stderr_path = work_dir + "/server.stderr";
  std::filesystem::remove(port_file);
  std::vector<std::string> all = {"--listen=127.0.0.1:0", "--port_file=" + port_file};
  all.insert(all.end(), args.begin(), args.end());
  absl::StatusOr<pid_t> pid = Spawn(all, stderr_path);
  if (!pid.ok()) return pid.status();
  std::unique_ptr<ServerProcess> server(new ServerProcess(*pid, stderr_path));
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    if (waitpid(*pid, &status, WNOHANG) == *pid) {
      server->pid_ = -1;
      return absl::FailedPreconditionError(
          absl::StrCat("kvtier-server exited during start: ", ReadFile(stderr_path)));
    }
    std::string text = ReadFile(port_file);
    int port = 0;
    if (absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &port) && port > 0) {
      server->port_ = port;
      break;
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("kvtier-server wrote no port file: ", ReadFile(stderr_path)));
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  // Tests connect their own gRPC channels next (common/absl_cycle_clock.h).
  InitAbslCycleClock();
  // A TCP connect, not a gRPC channel: the server may speak TLS.
  while (!AcceptsLoopbackConnection(server->port_)) {
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError("kvtier-server did not accept a connection");
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return server;
}

absl::StatusOr<ExitResult> ServerProcess::RunToExit(const std::vector<std::string>& args,
                                                    const std::string& work_dir,
                                                    absl::Duration timeout) {
  const std::string stderr_path = work_dir + "/run.stderr";
  absl::StatusOr<pid_t> pid = Spawn(args, stderr_path);
  if (!pid.ok()) return pid.status();
  absl::StatusOr<int> code = WaitExit(*pid, absl::Now() + timeout);
  if (!code.ok()) {
    kill(*pid, SIGKILL);
    waitpid(*pid, nullptr, 0);
    return code.status();
  }
  return ExitResult{.exit_code = *code, .stderr_text = ReadFile(stderr_path)};
}

std::string ServerProcess::StderrText() const {
  std::ifstream in(stderr_path_);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status ServerProcess::AwaitStderr(const std::string& text, absl::Duration timeout) const {
  const absl::Time deadline = absl::Now() + timeout;
  while (StderrText().find(text) == std::string::npos) {
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no \"", text, "\" in the server's log"));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::OkStatus();
}

absl::Status ServerProcess::Signal(int signal) {
  if (pid_ < 0) return absl::FailedPreconditionError("not running");
  if (kill(pid_, signal) != 0) return absl::ErrnoToStatus(errno, "kill");
  return absl::OkStatus();
}

absl::StatusOr<ExitResult> ServerProcess::Stop(absl::Duration timeout, int signal) {
  if (pid_ < 0) return absl::FailedPreconditionError("not running");
  kill(pid_, signal);
  absl::StatusOr<int> code = WaitExit(pid_, absl::Now() + timeout);
  if (!code.ok()) return code.status();
  pid_ = -1;
  return ExitResult{.exit_code = *code, .stderr_text = ReadFile(stderr_path_)};
}

ServerProcess::~ServerProcess() {
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
}

}  // namespace kvtier::testing
