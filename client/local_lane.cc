#include "client/local_lane.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/socket_io.h"
#include "common/spin.h"
#include "common/status_macros.h"
#include "kvtier/v1/local_lane.h"

namespace kvtier::client {
namespace {

// How long a caller polls for its reply before it sleeps.
constexpr absl::Duration kReplySpin = absl::Microseconds(50);

// Lanes of this process in use (leased): a caller polls only while they
// are at most half the cores, as with more the pollers would take the
// cores that the other callers' copies and the server need (measured on 2
// cores: 8 callers polling cost 64 KiB gets a third of their rate).
std::atomic<int> lanes_in_use{0};

absl::Status Errno(absl::string_view what, int err) {
  return absl::UnavailableError(absl::StrCat("local lane: ", what, ": ", std::strerror(err)));
}

// Closes an fd on every path that does not release it.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }

 private:
  int fd_;
};

absl::Status SetTimeout(int fd, int option, absl::Duration timeout) {
  // Zero would mean no bound at all.
  return SetSocketTimeout(fd, option, std::max(timeout, absl::Milliseconds(1)));
}

// RecvExact, with a server that closes between messages UNAVAILABLE too.
absl::Status Recv(int fd, void* out, size_t bytes) {
  absl::Status status = RecvExact(fd, out, bytes, "local lane");
  if (absl::IsNotFound(status)) return absl::UnavailableError("local lane: the server closed it");
  return status;
}

}  // namespace

absl::StatusOr<std::unique_ptr<LocalLane>> LocalLane::Open(const Grant& grant,
                                                           uint64_t segment_bytes,
                                                           absl::Duration timeout,
                                                           bool offer_direct) {
  if (grant.ticket.size() != wire::kLaneSecretBytes ||
      grant.server_proof.size() != wire::kLaneSecretBytes || grant.socket_name.empty() ||
      grant.socket_name.size() + 1 > sizeof(sockaddr_un::sun_path)) {
    return absl::InternalError("local lane: the server's grant is malformed");
  }
  if (segment_bytes == 0) return absl::InvalidArgumentError("local lane: segment_bytes must be > 0");
  Fd memfd(memfd_create("kvtier-lane", MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (memfd.get() < 0) return Errno("memfd_create", errno);
  if (ftruncate(memfd.get(), static_cast<off_t>(segment_bytes)) != 0) {
    return Errno("ftruncate", errno);
  }
  // The server maps it only sealed against shrinking: a truncated file
  // would fault its accesses.
  if (fcntl(memfd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    return Errno("sealing the segment", errno);
  }
  void* mapped =
      mmap(nullptr, segment_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, memfd.get(), 0);
  if (mapped == MAP_FAILED) return Errno("mmap", errno);
  struct Unmap {
    void* p;
    uint64_t bytes;
    ~Unmap() {
      if (p != nullptr) munmap(p, bytes);
    }
  } unmap{mapped, segment_bytes};

  Fd sock(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (sock.get() < 0) return Errno("socket", errno);
  RETURN_IF_ERROR(SetTimeout(sock.get(), SO_RCVTIMEO, timeout));
  RETURN_IF_ERROR(SetTimeout(sock.get(), SO_SNDTIMEO, timeout));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, grant.socket_name.data(), grant.socket_name.size());
  const auto len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + grant.socket_name.size());
  if (connect(sock.get(), reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    return Errno("connect (the server is on another host or network namespace?)", errno);
  }

  wire::LaneHello hello;
  std::memcpy(hello.ticket, grant.ticket.data(), wire::kLaneSecretBytes);
  // The server reads the ticket back from here (it stays until the
  // welcome): proof that this process is the one it will copy pages to.
  if (offer_direct) hello.probe_address = reinterpret_cast<uintptr_t>(&hello.ticket[0]);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{.iov_base = &hello, .iov_len = sizeof(hello)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  const int passed = memfd.get();
  std::memcpy(CMSG_DATA(cmsg), &passed, sizeof(int));
  ssize_t sent;
  do {
    sent = sendmsg(sock.get(), &msg, MSG_NOSIGNAL);
  } while (sent < 0 && errno == EINTR);
  if (sent != static_cast<ssize_t>(sizeof(hello))) return Errno("hello", errno);

  wire::LaneWelcome welcome;
  RETURN_IF_ERROR(Recv(sock.get(), &welcome, sizeof(welcome)));
  if (welcome.magic != wire::kLaneMagic) {
    return absl::UnavailableError("local lane: the peer does not speak the lane protocol");
  }
  if (welcome.code != 0) {
    welcome.message[sizeof(welcome.message) - 1] = '\0';
    return absl::Status(static_cast<absl::StatusCode>(welcome.code),
                        absl::StrCat("local lane refused: ", welcome.message));
  }
  if (CRYPTO_memcmp(welcome.server_proof, grant.server_proof.data(), wire::kLaneSecretBytes) !=
      0) {
    return absl::PermissionDeniedError(
        "local lane: the peer is not the server that issued the ticket (wrong proof)");
  }
  if (welcome.segment_bytes != segment_bytes ||
      welcome.max_frame_bytes < sizeof(wire::LaneRequestHeader) || welcome.direct > 1 ||
      (welcome.direct == 1 && !offer_direct)) {
    return absl::UnavailableError("local lane: the welcome does not match the hello");
  }
  unmap.p = nullptr;
  return std::unique_ptr<LocalLane>(new LocalLane(
      sock.release(), static_cast<uint8_t*>(mapped), segment_bytes, welcome.max_frame_bytes,
      welcome.direct == 1));
}

LocalLane::~LocalLane() {
  close(fd_);
  munmap(segment_, segment_bytes_);
}

absl::StatusOr<std::string> LocalLane::Call(uint32_t op,
                                            const google::protobuf::MessageLite& request,
                                            absl::Duration timeout) {
  if (broken_) return absl::UnavailableError("local lane: broken by an earlier failure");
  const size_t body = request.ByteSizeLong();
  constexpr size_t kHeaders = sizeof(wire::FrameHeader) + sizeof(wire::LaneRequestHeader);
  if (sizeof(wire::LaneRequestHeader) + body > max_frame_bytes_) {
    return absl::InvalidArgumentError(
        absl::StrFormat("local lane: a request of %d bytes exceeds the server's bound of %d",
                        body, max_frame_bytes_));
  }
  buffer_.resize(kHeaders + body);
  const wire::FrameHeader frame{static_cast<uint32_t>(sizeof(wire::LaneRequestHeader) + body)};
  const wire::LaneRequestHeader header{.request_id = next_request_++, .op = op, .reserved = 0};
  std::memcpy(buffer_.data(), &frame, sizeof(frame));
  std::memcpy(buffer_.data() + sizeof(frame), &header, sizeof(header));
  request.SerializeWithCachedSizesToArray(reinterpret_cast<uint8_t*>(buffer_.data() + kHeaders));
  // Any failure from here on leaves the stream where it cannot be resumed.
  broken_ = true;
  RETURN_IF_ERROR(SetTimeout(fd_, SO_RCVTIMEO, timeout));
  RETURN_IF_ERROR(SendAll(fd_, {absl::Span<const char>(buffer_)}, "local lane"));
  // A reply to a small request comes sooner than a wakeup would.
  if (lanes_in_use.load(std::memory_order_relaxed) <= SpinGate::HalfTheCores()) {
    SpinUntilReadable(fd_, kReplySpin);
  }
  wire::FrameHeader reply_frame;
  RETURN_IF_ERROR(Recv(fd_, &reply_frame, sizeof(reply_frame)));
  if (reply_frame.bytes < sizeof(wire::LaneReplyHeader) || reply_frame.bytes > max_frame_bytes_) {
    return absl::UnavailableError(
        absl::StrFormat("local lane: a reply frame of %d bytes", reply_frame.bytes));
  }
  wire::LaneReplyHeader reply;
  RETURN_IF_ERROR(Recv(fd_, &reply, sizeof(reply)));
  std::string payload(reply_frame.bytes - sizeof(reply), '\0');
  RETURN_IF_ERROR(Recv(fd_, payload.data(), payload.size()));
  if (reply.request_id != header.request_id) {
    return absl::UnavailableError("local lane: a reply to another request");
  }
  broken_ = false;
  if (reply.code != 0) {
    return absl::Status(static_cast<absl::StatusCode>(reply.code), payload);
  }
  return payload;
}

LanePool::Lease LanePool::Acquire() {
  {
    absl::MutexLock lock(&mu_);
    auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !idle_.empty() || open_ < options_.max_lanes;
    };
    // At the bound, wait for a lane another caller returns; it comes back
    // within one request.
    mu_.Await(absl::Condition(&ready));
    if (!idle_.empty()) {
      std::unique_ptr<LocalLane> lane = std::move(idle_.back());
      idle_.pop_back();
      lanes_in_use.fetch_add(1, std::memory_order_relaxed);
      return Lease(this, std::move(lane));
    }
    if (absl::Now() < next_try_) return Lease();
    ++open_;
  }
  absl::StatusOr<std::unique_ptr<LocalLane>> lane = [&]() -> absl::StatusOr<std::unique_ptr<LocalLane>> {
    ASSIGN_OR_RETURN(const LocalLane::Grant grant, grant_());
    return LocalLane::Open(grant, options_.segment_bytes, options_.timeout,
                           options_.offer_direct);
  }();
  absl::MutexLock lock(&mu_);
  if (!lane.ok()) {
    --open_;
    constexpr int kMaxDoublings = 6;
    next_try_ = absl::Now() + options_.retry_interval * (int64_t{1} << std::min(failures_, kMaxDoublings));
    if (failures_++ == 0) {
      KVTIER_LOG(INFO) << "no local lane, page bytes take the other paths: " << lane.status();
    }
    return Lease();
  }
  failures_ = 0;
  ++opened_;
  lanes_in_use.fetch_add(1, std::memory_order_relaxed);
  return Lease(this, *std::move(lane));
}

void LanePool::Return(std::unique_ptr<LocalLane> lane) {
  lanes_in_use.fetch_sub(1, std::memory_order_relaxed);
  std::unique_ptr<LocalLane> dropped;  // closed and unmapped after mu_ is released
  absl::MutexLock lock(&mu_);
  if (lane->broken()) {
    --open_;
    dropped = std::move(lane);
    return;
  }
  idle_.push_back(std::move(lane));
}

uint64_t LanePool::lanes_opened() const {
  absl::MutexLock lock(&mu_);
  return opened_;
}

}  // namespace kvtier::client
