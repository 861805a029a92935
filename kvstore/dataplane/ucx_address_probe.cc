#include "kvstore/dataplane/ucx_address_probe.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"

extern char** environ;

namespace kvtier::store {
namespace {

// What the probe may write to stderr that we keep for the error message.
constexpr size_t kMaxStderrBytes = 4096;

absl::Mutex probes_mu(absl::kConstInit);
int running_probes ABSL_GUARDED_BY(probes_mu) = 0;

class ProbeSlot {
 public:
  ProbeSlot() {
    absl::MutexLock lock(&probes_mu);
    probes_mu.Await(absl::Condition(
        +[](int* running) { return *running < kMaxConcurrentProbes; }, &running_probes));
    ++running_probes;
  }
  ~ProbeSlot() {
    absl::MutexLock lock(&probes_mu);
    --running_probes;
  }
};

// Both ends of a pipe, closed on destruction.
struct Pipe {
  int fds[2] = {-1, -1};
  ~Pipe() {
    for (int fd : fds) {
      if (fd >= 0) close(fd);
    }
  }
  void Close(int end) {
    if (fds[end] >= 0) close(fds[end]);
    fds[end] = -1;
  }
};

// The last non-empty line of what the probe wrote.
std::string LastLine(const std::string& text) {
  std::string last;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!line.empty()) last = std::string(line);
  }
  return last;
}

}  // namespace

std::string DefaultUcxProbePath() {
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return "";
  return (self.parent_path() / "kvtier-ucx-probe").string();
}

std::string ProbeInput(absl::string_view address, absl::string_view rkey) {
  std::string input(4, '\0');
  const uint32_t length = static_cast<uint32_t>(address.size());
  for (int i = 0; i < 4; ++i) input[i] = static_cast<char>((length >> (8 * i)) & 0xff);
  absl::StrAppend(&input, address, rkey);
  return input;
}

namespace {

// Runs the probe on `input`; `what` names the field in errors.
absl::Status RunProbe(const std::string& probe_path, const std::string& input,
                      absl::string_view what, const ucx::UcxOptions& options,
                      absl::Duration timeout) {
  if (probe_path.empty()) {
    return absl::UnavailableError("no UCX address probe program is configured");
  }
  ProbeSlot slot;
  Pipe in, err;
  if (pipe2(in.fds, O_CLOEXEC) != 0 || pipe2(err.fds, O_CLOEXEC) != 0) {
    return absl::UnavailableError(absl::StrCat("pipe: ", std::strerror(errno)));
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in.fds[0], STDIN_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.fds[1], STDERR_FILENO);
  posix_spawn_file_actions_adddup2(&actions, err.fds[1], STDOUT_FILENO);
  std::string transports = absl::StrCat("--ucx_transports=", options.transports);
  std::string mutex = absl::StrCat("--ucx_mutex_locks=", options.mutex_locks ? 1 : 0);
  std::string program = probe_path;
  char* argv[] = {program.data(), transports.data(), mutex.data(), nullptr};
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, probe_path.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot start ", probe_path, ": ", std::strerror(spawned)));
  }
  in.Close(0);
  err.Close(1);
  // A probe that dies before reading its input must not kill us with
  // SIGPIPE when we write it.
  static absl::once_flag ignore_sigpipe;
  absl::call_once(ignore_sigpipe, [] { signal(SIGPIPE, SIG_IGN); });
  size_t written = 0;
  while (written < input.size()) {
    const ssize_t n = write(in.fds[1], input.data() + written, input.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  in.Close(1);

  std::string output;
  const absl::Time deadline = absl::Now() + timeout;
  bool timed_out = false;
  while (true) {
    const int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) {
      timed_out = true;
      break;
    }
    pollfd pfd{.fd = err.fds[0], .events = POLLIN, .revents = 0};
    const int ready = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (ready < 0 && errno != EINTR) break;
    if (ready <= 0) continue;
    char buffer[1024];
    const ssize_t n = read(err.fds[0], buffer, sizeof(buffer));
    if (n <= 0) break;  // EOF: the probe is done
    if (output.size() < kMaxStderrBytes) output.append(buffer, static_cast<size_t>(n));
  }
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (timed_out) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": UCX did not answer within ", absl::FormatDuration(timeout)));
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  if (WIFEXITED(status)) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": UCX refused it: ", LastLine(output)));
  }
  return absl::InvalidArgumentError(absl::StrCat(
      what, ": malformed (UCX ", WIFSIGNALED(status) ? "aborted on it, signal " : "",
      WIFSIGNALED(status) ? WTERMSIG(status) : status, ")"));
}

}  // namespace

absl::Status ProbeUcxAddress(const std::string& probe_path, absl::string_view address,
                             const ucx::UcxOptions& options, absl::Duration timeout) {
  return RunProbe(probe_path, ProbeInput(address, ""), "client_worker_address", options,
                  timeout);
}

absl::Status ProbeUcxRkey(const std::string& probe_path, absl::string_view address,
                          absl::string_view rkey, const ucx::UcxOptions& options,
                          absl::Duration timeout) {
  if (rkey.empty()) return absl::InvalidArgumentError("region.rkey: empty");
  return RunProbe(probe_path, ProbeInput(address, rkey), "region.rkey", options, timeout);
}

}  // namespace kvtier::store
