// Whether this host lets processes read each other's memory with
// cross-memory attach (process_vm_readv), which local lanes' direct
// transfers need: a parent its child's, and a child its parent's (a test's
// kvtier-server is the child of the client it serves). A seccomp filter or
// a ptrace restriction (Yama) can refuse either; tests of direct transfers
// skip there, saying why, and lanes then work without them.
#ifndef KVTIER_TESTING_CROSS_MEMORY_H_
#define KVTIER_TESTING_CROSS_MEMORY_H_

#include <signal.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

namespace kvtier::testing {

inline bool CrossMemoryAttachWorks() {
  // Each side changes its own copy after the fork, so a read that sees the
  // change came from the other process.
  static char childs = 'a';
  static char parents = 'a';
  int to_parent[2];
  int to_child[2];
  if (pipe(to_parent) != 0) return false;
  if (pipe(to_child) != 0) {
    close(to_parent[0]);
    close(to_parent[1]);
    return false;
  }
  const pid_t child = fork();
  if (child == 0) {
    childs = 'c';
    char go = 0;
    if (read(to_child[0], &go, 1) != 1) _exit(1);
    char seen = 0;
    iovec local{.iov_base = &seen, .iov_len = 1};
    iovec remote{.iov_base = &parents, .iov_len = 1};
    const char verdict =
        process_vm_readv(getppid(), &local, 1, &remote, 1, 0) == 1 && seen == 'p' ? 'y' : 'n';
    if (write(to_parent[1], &verdict, 1) != 1) _exit(1);
    pause();
    _exit(0);
  }
  bool works = false;
  if (child > 0) {
    parents = 'p';
    char verdict = 0;
    if (write(to_child[1], "g", 1) == 1 && read(to_parent[0], &verdict, 1) == 1 &&
        verdict == 'y') {
      char seen = 0;
      iovec local{.iov_base = &seen, .iov_len = 1};
      iovec remote{.iov_base = &childs, .iov_len = 1};
      works = process_vm_readv(child, &local, 1, &remote, 1, 0) == 1 && seen == 'c';
    }
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    parents = 'a';
  }
  close(to_parent[0]);
  close(to_parent[1]);
  close(to_child[0]);
  close(to_child[1]);
  return works;
}

}  // namespace kvtier::testing

#endif  // KVTIER_TESTING_CROSS_MEMORY_H_
