#include "testing/etcd_process.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kvtier::testing {

absl::StatusOr<std::unique_ptr<ChildProcess>> ChildProcess::Spawn(
    const std::vector<std::string>& argv, const std::string& log_path, bool pipe_stdio) {
  std::vector<std::string> args = argv;
  std::vector<char*> c_argv;
  for (std::string& arg : args) c_argv.push_back(arg.data());
  c_argv.push_back(nullptr);
  // Everything the child needs is made before fork: it may only make
  // async-signal-safe calls.
  const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::ErrnoToStatus(errno, absl::StrCat("open ", log_path));
  int to_child[2] = {-1, -1};
  int from_child[2] = {-1, -1};
  if (pipe_stdio && (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(from_child, O_CLOEXEC) != 0)) {
    close(log_fd);
    return absl::ErrnoToStatus(errno, "pipe2");
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::ErrnoToStatus(errno, "fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(log_fd, STDERR_FILENO);
    if (pipe_stdio) {
      dup2(to_child[0], STDIN_FILENO);
      dup2(from_child[1], STDOUT_FILENO);
    } else {
      dup2(log_fd, STDOUT_FILENO);
      const int null_fd = open("/dev/null", O_RDONLY);
      if (null_fd >= 0) dup2(null_fd, STDIN_FILENO);
    }
    execv(c_argv[0], c_argv.data());
    _exit(127);
  }
  close(log_fd);
  if (!pipe_stdio) return std::unique_ptr<ChildProcess>(new ChildProcess(pid, -1, -1));
  close(to_child[0]);
  close(from_child[1]);
  return std::unique_ptr<ChildProcess>(new ChildProcess(pid, to_child[1], from_child[0]));
}

ChildProcess::~ChildProcess() {
  Kill();
  CloseStdin();
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

bool ChildProcess::running() {
  if (pid_ < 0) return false;
  if (waitpid(pid_, nullptr, WNOHANG) == pid_) pid_ = -1;
  return pid_ >= 0;
}

absl::Status ChildProcess::Signal(int signal) {
  if (pid_ < 0) return absl::FailedPreconditionError("not running");
  if (kill(pid_, signal) != 0) return absl::ErrnoToStatus(errno, "kill");
  return absl::OkStatus();
}

absl::StatusOr<int> ChildProcess::Wait(absl::Duration timeout) {
  if (pid_ < 0) return absl::FailedPreconditionError("not running");
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    const pid_t reaped = waitpid(pid_, &status, WNOHANG);
    if (reaped == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    }
    if (reaped < 0) return absl::ErrnoToStatus(errno, "waitpid");
    if (absl::Now() > deadline) return absl::DeadlineExceededError("child did not exit");
    absl::SleepFor(absl::Milliseconds(10));
  }
}

void ChildProcess::Kill() {
  if (pid_ < 0) return;
  kill(pid_, SIGKILL);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

absl::Status ChildProcess::WriteLine(const std::string& line) {
  const std::string text = line + "\n";
  if (write(stdin_fd_, text.data(), text.size()) != static_cast<ssize_t>(text.size())) {
    return absl::ErrnoToStatus(errno, "write to child");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> ChildProcess::ReadLine(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    const size_t newline = buffered_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffered_.substr(0, newline);
      buffered_.erase(0, newline + 1);
      return line;
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) return absl::DeadlineExceededError("no line from child");
    pollfd poll_fd{.fd = stdout_fd_, .events = POLLIN, .revents = 0};
    if (poll(&poll_fd, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
    char chunk[256];
    const ssize_t n = read(stdout_fd_, chunk, sizeof(chunk));
    if (n <= 0) return absl::UnavailableError("child closed its stdout");
    buffered_.append(chunk, static_cast<size_t>(n));
  }
}

void ChildProcess::CloseStdin() {
  if (stdin_fd_ >= 0) close(stdin_fd_);
  stdin_fd_ = -1;
}

absl::StatusOr<std::unique_ptr<EtcdProcess>> EtcdProcess::Start(const std::string& dir) {
  std::error_code ignored;
  std::filesystem::create_directories(dir, ignored);
  absl::Status last;
  // Another process may take a picked port before etcd binds it: retry.
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<int> client_port = PickFreePort();
    absl::StatusOr<int> peer_port = PickFreePort();
    if (!client_port.ok()) return client_port.status();
    if (!peer_port.ok()) return peer_port.status();
    if (*client_port == *peer_port) continue;
    std::unique_ptr<EtcdProcess> etcd(new EtcdProcess(dir, *client_port, *peer_port));
    std::filesystem::remove_all(dir + "/data");
    last = etcd->Launch();
    if (last.ok()) return etcd;
  }
  return last;
}

absl::Status EtcdProcess::Launch() {
  // The log is appended to across restarts: only this launch's lines count.
  const size_t log_start = Log().size();
  const std::string client_url = absl::StrCat("http://127.0.0.1:", client_port_);
  const std::string peer_url = absl::StrCat("http://127.0.0.1:", peer_port_);
  absl::StatusOr<std::unique_ptr<ChildProcess>> child = ChildProcess::Spawn(
      {kBinary, "--data-dir", dir_ + "/data", "--listen-client-urls", client_url,
       "--advertise-client-urls", client_url, "--listen-peer-urls", peer_url,
       "--initial-advertise-peer-urls", peer_url, "--initial-cluster", "default=" + peer_url},
      dir_ + "/etcd.log", /*pipe_stdio=*/false);
  if (!child.ok()) return child.status();
  process_ = *std::move(child);
  // etcd logs this once its server is ready (a leader elected, its member
  // published); the connect makes sure the client port is bound.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (Log().find("ready to serve client requests", log_start) == std::string::npos ||
         !AcceptsLoopbackConnection(client_port_)) {
    if (!process_->running()) {
      return absl::UnavailableError(absl::StrCat("etcd exited during start:\n", Log()));
    }
    if (absl::Now() >= deadline) {
      process_->Kill();
      return absl::DeadlineExceededError(absl::StrCat("etcd did not start serving:\n", Log()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::OkStatus();
}

void EtcdProcess::Kill() {
  if (process_ != nullptr) process_->Kill();
}

absl::Status EtcdProcess::Restart() {
  Kill();
  return Launch();
}

std::string EtcdProcess::Log() const {
  std::ifstream in(dir_ + "/etcd.log");
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace kvtier::testing
