// ClientMemory against a child process at the other end of a Unix socket:
// what it reads and writes is the child's memory, only while the child
// lives, and only where the child maps it.
#include "kvstore/dataplane/client_memory.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "testing/cross_memory.h"

namespace kvtier::store {
namespace {

// Same address in parent and child (fork copies the address space): the
// child changes its copies after the fork, so what the parent reads there
// can only have come from the child.
char secret[16] = "0123456789abcde";
char child_page[4096];
char child_inbox[64];

// A listening abstract Unix socket named `prefix` + our pid; fd -1 when it
// cannot be made.
struct Listener {
  int fd = -1;
  sockaddr_un addr{};
  socklen_t len = 0;
};
Listener Listen(const std::string& prefix) {
  Listener l;
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return l;
  l.addr.sun_family = AF_UNIX;
  const std::string name = prefix + std::to_string(getpid());
  std::memcpy(l.addr.sun_path + 1, name.data(), name.size());
  l.len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (bind(fd, reinterpret_cast<const sockaddr*>(&l.addr), l.len) != 0 || listen(fd, 1) != 0) {
    close(fd);
    return l;
  }
  l.fd = fd;
  return l;
}

class ClientMemoryTest : public ::testing::Test {
 protected:
  // Forks a child that connects to a listening socket of ours, writes
  // "CHILD" into child_page, and waits for a byte; then on "check" reports
  // whether child_inbox holds "FROM SERVER".
  void SetUp() override {
    if (!kvtier::testing::CrossMemoryAttachWorks()) {
      GTEST_SKIP() << "this host refuses cross-memory attach to a child process";
    }
    const Listener listener = Listen("kvtier-client-memory-test-");
    ASSERT_GE(listener.fd, 0);
    const sockaddr_un& addr = listener.addr;
    const socklen_t len = listener.len;
    child_ = fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      const int s = socket(AF_UNIX, SOCK_STREAM, 0);
      if (connect(s, reinterpret_cast<const sockaddr*>(&addr), len) != 0) _exit(2);
      std::memcpy(child_page, "CHILD", 5);
      secret[15] = '!';
      char byte = 0;
      if (write(s, "r", 1) != 1) _exit(3);  // ready
      while (read(s, &byte, 1) == 1) {
        const char answer = std::memcmp(child_inbox, "FROM SERVER", 11) == 0 ? 'y' : 'n';
        if (write(s, &answer, 1) != 1) _exit(4);
      }
      _exit(0);
    }
    sock_ = accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
    close(listener.fd);
    ASSERT_GE(sock_, 0);
    char ready = 0;
    ASSERT_EQ(read(sock_, &ready, 1), 1);
    child_secret_ = std::string(secret, 15) + "!";
  }

  void TearDown() override {
    if (sock_ >= 0) close(sock_);
    if (child_ > 0) EndChild();
  }

  void EndChild() {
    close(sock_);
    sock_ = -1;
    int status = 0;
    waitpid(child_, &status, 0);
    child_ = -1;
  }

  absl::Span<const uint8_t> ChildSecret() const {
    return {reinterpret_cast<const uint8_t*>(child_secret_.data()), child_secret_.size()};
  }

  pid_t child_ = -1;
  int sock_ = -1;
  std::string child_secret_;
};

uint64_t Address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

// A client of another user is refused before its memory is touched: a
// server with privilege over it (root here) would otherwise reach any
// setuid image the client exec's after the check of its ticket.
TEST(ClientMemoryUserTest, AClientOfAnotherUserGetsNoDirectTransfers) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to run a child as another user";
  const Listener listener = Listen("kvtier-client-memory-user-test-");
  ASSERT_GE(listener.fd, 0);
  const sockaddr_un& addr = listener.addr;
  const socklen_t len = listener.len;
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    constexpr uid_t kNobody = 65534;
    if (setresgid(kNobody, kNobody, kNobody) != 0 || setresuid(kNobody, kNobody, kNobody) != 0) {
      _exit(2);
    }
    const int s = socket(AF_UNIX, SOCK_STREAM, 0);
    if (connect(s, reinterpret_cast<const sockaddr*>(&addr), len) != 0) _exit(3);
    char byte = 0;
    while (read(s, &byte, 1) == 1) {
    }
    _exit(0);
  }
  const int sock = accept4(listener.fd, nullptr, nullptr, SOCK_CLOEXEC);
  close(listener.fd);
  ASSERT_GE(sock, 0);
  const std::string ticket(16, 't');
  const absl::StatusOr<std::unique_ptr<ClientMemory>> memory = ClientMemory::Attach(
      sock, Address(secret),
      {reinterpret_cast<const uint8_t*>(ticket.data()), ticket.size()});
  EXPECT_EQ(memory.status().code(), absl::StatusCode::kFailedPrecondition) << memory.status();
  EXPECT_NE(memory.status().message().find("uid 65534"), absl::string_view::npos)
      << memory.status();
  close(sock);
  int status = 0;
  waitpid(child, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST_F(ClientMemoryTest, ReadsAndWritesThePeersMemory) {
  absl::StatusOr<std::unique_ptr<ClientMemory>> memory =
      ClientMemory::Attach(sock_, Address(secret), ChildSecret());
  ASSERT_TRUE(memory.ok()) << memory.status();
  EXPECT_EQ((*memory)->pid(), child_);

  char seen[5] = {};
  const ClientRange from{.address = Address(child_page), .bytes = 5};
  const absl::Span<uint8_t> to(reinterpret_cast<uint8_t*>(seen), 5);
  ASSERT_TRUE((*memory)->Read({&from, 1}, {&to, 1}).ok());
  EXPECT_EQ(std::string(seen, 5), "CHILD");
  EXPECT_EQ(child_page[0], 0);  // ours is untouched

  const std::string text = "FROM SERVER";
  const absl::Span<const uint8_t> out(reinterpret_cast<const uint8_t*>(text.data()), text.size());
  const ClientRange into{.address = Address(child_inbox), .bytes = text.size()};
  ASSERT_TRUE((*memory)->Write({&out, 1}, {&into, 1}).ok());
  char answer = 0;
  ASSERT_EQ(write(sock_, "c", 1), 1);
  ASSERT_EQ(read(sock_, &answer, 1), 1);
  EXPECT_EQ(answer, 'y');
  EXPECT_EQ(child_inbox[0], 0);
}

TEST_F(ClientMemoryTest, AProbeWithoutTheSecretIsRefused) {
  // Our own copy of the secret differs from the child's in its last byte.
  const absl::Span<const uint8_t> ours(reinterpret_cast<const uint8_t*>(secret), 16);
  EXPECT_EQ(ClientMemory::Attach(sock_, Address(secret), ours).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(ClientMemory::Attach(sock_, 8, ChildSecret()).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ClientMemory::Attach(sock_, 0, ChildSecret()).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientMemoryTest, BadRangesAreNamedAndSizesMustMatch) {
  absl::StatusOr<std::unique_ptr<ClientMemory>> memory =
      ClientMemory::Attach(sock_, Address(secret), ChildSecret());
  ASSERT_TRUE(memory.ok()) << memory.status();
  uint8_t a[8] = {};
  uint8_t b[8] = {};
  const absl::Span<uint8_t> to[] = {absl::Span<uint8_t>(a), absl::Span<uint8_t>(b)};
  // The second range is not mapped in the child: the error names it, and
  // the first was read.
  const ClientRange from[] = {{.address = Address(child_page), .bytes = 8},
                              {.address = 4096, .bytes = 8}};
  const absl::Status bad = (*memory)->Read(from, to);
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("range 1 "), std::string::npos) << bad;
  EXPECT_EQ(std::string(reinterpret_cast<char*>(a), 5), "CHILD");

  const ClientRange longer{.address = Address(child_page), .bytes = 9};
  EXPECT_EQ((*memory)->Read({&longer, 1}, {&to[0], 1}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*memory)->Read(from, {&to[0], 1}).code(), absl::StatusCode::kInvalidArgument);
  // Writing where the child maps nothing writable (its code).
  const absl::Span<const uint8_t> bytes(b);
  const ClientRange code{.address = Address(reinterpret_cast<const void*>(&Address)),
                         .bytes = sizeof(b)};
  EXPECT_EQ((*memory)->Write({&bytes, 1}, {&code, 1}).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ClientMemoryTest, NothingIsTouchedOnceTheProcessEnded) {
  absl::StatusOr<std::unique_ptr<ClientMemory>> memory =
      ClientMemory::Attach(sock_, Address(secret), ChildSecret());
  ASSERT_TRUE(memory.ok()) << memory.status();
  EndChild();  // exits on the closed socket; reaped
  uint8_t a[5] = {};
  const absl::Span<uint8_t> to(a);
  const ClientRange from{.address = Address(child_page), .bytes = 5};
  EXPECT_EQ((*memory)->Read({&from, 1}, {&to, 1}).code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace kvtier::store
