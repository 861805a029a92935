#include "common/socket_io.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kvtier {
namespace {

absl::Status ErrnoStatus(const char* what, const char* call, int err) {
  if (err == EAGAIN || err == EWOULDBLOCK) {
    return absl::DeadlineExceededError(absl::StrCat(what, ": ", call, " timed out"));
  }
  return absl::UnavailableError(absl::StrCat(what, ": ", call, ": ", std::strerror(err)));
}

}  // namespace

absl::Status SetSocketTimeout(int fd, int option, absl::Duration timeout) {
  const timeval tv = absl::ToTimeval(timeout);
  if (setsockopt(fd, SOL_SOCKET, option, &tv, sizeof(tv)) != 0) {
    return ErrnoStatus("socket", "setsockopt", errno);
  }
  return absl::OkStatus();
}

absl::Status RecvExact(int fd, void* out, size_t bytes, const char* what) {
  auto* p = static_cast<uint8_t*>(out);
  for (size_t done = 0; done < bytes;) {
    const ssize_t n = recv(fd, p + done, bytes - done, 0);
    if (n > 0) {
      done += static_cast<size_t>(n);
    } else if (n == 0) {
      return done == 0 ? absl::NotFoundError(absl::StrCat(what, ": the peer closed"))
                       : absl::UnavailableError(
                             absl::StrCat(what, ": the stream ended inside a message"));
    } else if (errno != EINTR) {
      return ErrnoStatus(what, "recv", errno);
    }
  }
  return absl::OkStatus();
}

absl::Status SendAll(int fd, absl::Span<const absl::Span<const char>> parts, const char* what) {
  std::vector<iovec> iov;
  iov.reserve(parts.size());
  for (absl::Span<const char> part : parts) {
    if (!part.empty()) iov.push_back({const_cast<char*>(part.data()), part.size()});
  }
  size_t first = 0;
  while (first < iov.size()) {
    msghdr msg{};
    msg.msg_iov = iov.data() + first;
    msg.msg_iovlen = iov.size() - first;
    ssize_t n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return ErrnoStatus(what, "send", errno);
    }
    // Skip what went out; a part partly sent continues where it stopped.
    while (first < iov.size() && static_cast<size_t>(n) >= iov[first].iov_len) {
      n -= static_cast<ssize_t>(iov[first].iov_len);
      ++first;
    }
    if (first < iov.size()) {
      iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + n;
      iov[first].iov_len -= static_cast<size_t>(n);
    }
  }
  return absl::OkStatus();
}

}  // namespace kvtier
