#include "kvstore/dataplane/local_lanes.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/secure_random.h"
#include "common/socket_io.h"
#include "common/spin.h"
#include "common/status_macros.h"

namespace kvtier::store {
namespace {

// Connections that have not said hello yet, beyond the lanes' bound: a
// process needs no ticket to connect, so these are bounded apart, and at
// the bound the oldest is dropped for the newest (a client says hello as
// soon as it connects; one that holds connections open without a word
// cannot keep the others out).
constexpr size_t kMaxPendingHellos = 16;
// The largest request frame a lane reads: requests name pages, their bytes
// travel in the segment (a batch of 65,536 pages takes a few MiB).
constexpr uint32_t kMaxRequestFrameBytes = uint32_t{16} << 20;
// A frame's buffer grows as its bytes arrive, by at least this much.
constexpr size_t kFrameChunkBytes = size_t{1} << 20;
// How long a lane's thread polls for the next request (AdaptiveSpin).
constexpr std::chrono::microseconds kRequestSpin(200);

absl::Status ErrnoStatus(absl::string_view what, int err) {
  return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(err)));
}

void SetTimeout(int fd, int option, absl::Duration timeout) {
  // Failing leaves the socket blocking without a bound, which only the
  // lane's own client can exploit; logged.
  if (absl::Status s = SetSocketTimeout(fd, option, timeout); !s.ok()) {
    KVTIER_LOG(WARNING) << "local lane: " << s;
  }
}

template <typename T>
absl::Span<const char> BytesOf(const T& value) {
  return {reinterpret_cast<const char*>(&value), sizeof(value)};
}

uint64_t SecretId(const uint8_t* secret) {
  uint64_t id;
  std::memcpy(&id, secret, sizeof(id));
  return id;
}

}  // namespace

absl::Status LocalLaneOptions::Validate() const {
  if (max_lanes == 0) return absl::InvalidArgumentError("local lanes: max_lanes must be > 0");
  if (max_lanes_per_tenant == 0 || max_lanes_per_tenant > max_lanes) {
    return absl::InvalidArgumentError(
        absl::StrFormat("local lanes: max_lanes_per_tenant %d: need 1..max_lanes (%d)",
                        max_lanes_per_tenant, max_lanes));
  }
  if (max_segment_bytes == 0 || max_segment_bytes > max_mapped_bytes) {
    return absl::InvalidArgumentError(
        "local lanes: max_segment_bytes must be > 0 and <= max_mapped_bytes");
  }
  constexpr uint32_t kMinFrame = 4096;
  if (max_frame_bytes < kMinFrame) {
    return absl::InvalidArgumentError(
        absl::StrFormat("local lanes: max_frame_bytes must be >= %d", kMinFrame));
  }
  if (ticket_ttl <= absl::ZeroDuration() || io_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("local lanes: ticket_ttl and io_timeout must be > 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<LocalLanes>> LocalLanes::Start(const LocalLaneOptions& options,
                                                              Handler handler) {
  RETURN_IF_ERROR(options.Validate());
  uint8_t random[16];
  SecureRandomBytes(absl::MakeSpan(random));
  std::string name = absl::StrCat(
      "kvtier-lanes-",
      absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(random), 16)));
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return ErrnoStatus("local lanes: socket", errno);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  // Abstract: sun_path[0] stays NUL and the name follows; no file to leave.
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0 || listen(fd, 128) != 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus("local lanes: bind/listen", err);
  }
  const int wake = eventfd(0, EFD_CLOEXEC);
  if (wake < 0) {
    const int err = errno;
    close(fd);
    return ErrnoStatus("local lanes: eventfd", err);
  }
  std::unique_ptr<LocalLanes> lanes(
      new LocalLanes(options, std::move(handler), fd, wake, std::move(name)));
  lanes->acceptor_ = std::thread([p = lanes.get()] { p->AcceptLoop(); });
  return lanes;
}

LocalLanes::LocalLanes(const LocalLaneOptions& options, Handler handler, int listen_fd,
                       int wake_fd, std::string socket_name)
    : options_(options),
      handler_(std::move(handler)),
      listen_fd_(listen_fd),
      wake_fd_(wake_fd),
      socket_name_(std::move(socket_name)) {}

LocalLanes::~LocalLanes() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    for (Lane& lane : lanes_) shutdown(lane.fd, SHUT_RDWR);
  }
  const uint64_t one = 1;
  if (write(wake_fd_, &one, sizeof(one)) != sizeof(one)) {
    KVTIER_LOG(ERROR) << "local lanes: cannot wake the acceptor: " << std::strerror(errno);
  }
  if (acceptor_.joinable()) acceptor_.join();
  Reap(/*all=*/true);
  close(listen_fd_);
  close(wake_fd_);
}

absl::StatusOr<LocalLanes::Ticket> LocalLanes::Issue(const LaneOwner& owner,
                                                     const std::function<bool()>& granted) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  DropExpiredTicketsLocked(now);
  if (stopping_) return absl::UnavailableError("local lanes: the server is stopping");
  // Checked under mu_, which CloseAll takes: a grant revoked before this
  // check gets no ticket, one revoked after it has its ticket forgotten.
  if (granted != nullptr && !granted()) {
    return absl::UnavailableError(
        "local lanes: the credentials were reloaded meanwhile; ask for a lane again");
  }
  if (held_total_ >= options_.max_lanes) {
    return absl::ResourceExhaustedError(
        absl::StrFormat("local lanes: the server has its %d lanes", options_.max_lanes));
  }
  if (HeldLocked(owner.tenant) >= options_.max_lanes_per_tenant) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "local lanes: this tenant has its %d lanes", options_.max_lanes_per_tenant));
  }
  PendingTicket pending{.secret = {}, .proof = {}, .owner = owner, .expiry = now + options_.ticket_ttl};
  do {
    SecureRandomBytes(absl::MakeSpan(pending.secret));
  } while (tickets_.contains(SecretId(pending.secret.data())));
  SecureRandomBytes(absl::MakeSpan(pending.proof));
  Ticket ticket{
      .socket_name = socket_name_,
      .ticket = std::string(pending.secret.begin(), pending.secret.end()),
      .server_proof = std::string(pending.proof.begin(), pending.proof.end())};
  tickets_.emplace(SecretId(pending.secret.data()), std::move(pending));
  ++held_[owner.tenant];
  ++held_total_;
  return ticket;
}

void LocalLanes::CloseAll() {
  absl::MutexLock lock(&mu_);
  for (auto& [id, ticket] : tickets_) ReleaseLocked(ticket.owner.tenant);
  tickets_.clear();
  for (Lane& lane : lanes_) shutdown(lane.fd, SHUT_RDWR);
}

LocalLanes::Stats LocalLanes::stats() const {
  Stats stats;
  stats.open_lanes = open_lanes_.load();
  stats.lanes_opened = lanes_opened_.load();
  stats.hellos_refused = hellos_refused_.load();
  stats.hellos_evicted = hellos_evicted_.load();
  stats.requests = requests_.load();
  stats.direct_lanes = direct_lanes_.load();
  stats.direct_declined = direct_declined_.load();
  absl::MutexLock lock(&mu_);
  stats.mapped_bytes = mapped_bytes_;
  return stats;
}

uint32_t LocalLanes::HeldLocked(uint64_t tenant) const {
  auto it = held_.find(tenant);
  return it == held_.end() ? 0 : it->second;
}

void LocalLanes::ReleaseLocked(uint64_t tenant) {
  auto it = held_.find(tenant);
  if (it == held_.end()) return;
  if (--it->second == 0) held_.erase(it);
  --held_total_;
}

void LocalLanes::DropExpiredTicketsLocked(absl::Time now) {
  for (auto it = tickets_.begin(); it != tickets_.end();) {
    if (it->second.expiry > now) {
      ++it;
      continue;
    }
    ReleaseLocked(it->second.owner.tenant);
    tickets_.erase(it++);
  }
}

absl::StatusOr<LocalLanes::PendingTicket> LocalLanes::SpendTicket(const Secret& secret) {
  absl::MutexLock lock(&mu_);
  auto it = tickets_.find(SecretId(secret.data()));
  const absl::Status refused =
      absl::PermissionDeniedError("local lane: unknown, spent or expired ticket");
  if (it == tickets_.end()) return refused;
  PendingTicket ticket = std::move(it->second);
  tickets_.erase(it);
  // Spent whatever the outcome: a ticket gets one try.
  if (CRYPTO_memcmp(ticket.secret.data(), secret.data(), secret.size()) != 0 ||
      ticket.expiry <= absl::Now()) {
    ReleaseLocked(ticket.owner.tenant);
    return refused;
  }
  return ticket;  // its hold now counts for the lane
}

void LocalLanes::AcceptLoop() {
  pollfd fds[2] = {{.fd = listen_fd_, .events = POLLIN, .revents = 0},
                   {.fd = wake_fd_, .events = POLLIN, .revents = 0}};
  while (true) {
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      KVTIER_LOG(ERROR) << "local lanes: poll: " << std::strerror(errno) << "; no new lanes";
      return;
    }
    if (fds[1].revents != 0) return;
    const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) continue;  // the peer gave up, or EMFILE: the next poll tries again
    Reap(/*all=*/false);
    absl::MutexLock lock(&mu_);
    if (awaiting_hellos_ >= kMaxPendingHellos) {
      for (Lane& oldest : lanes_) {
        if (!oldest.awaiting_hello) continue;
        // Its thread's read of the hello fails now.
        shutdown(oldest.fd, SHUT_RDWR);
        oldest.awaiting_hello = false;
        --awaiting_hellos_;
        ++hellos_evicted_;
        break;
      }
    }
    // Open lanes are bounded by their tickets and waiting ones above; this
    // bounds the threads of lanes still ending as well.
    if (stopping_ || lanes_.size() >= 2 * (options_.max_lanes + kMaxPendingHellos)) {
      close(fd);
      ++hellos_refused_;
      continue;
    }
    Lane& lane = lanes_.emplace_back();
    lane.fd = fd;
    ++awaiting_hellos_;
    lane.thread = std::thread([this, p = &lane] { ServeLane(p); });
  }
}

void LocalLanes::Reap(bool all) {
  std::list<Lane> ended;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = lanes_.begin(); it != lanes_.end();) {
      auto next = std::next(it);
      if (all || it->done.load()) ended.splice(ended.end(), lanes_, it);
      it = next;
    }
  }
  for (Lane& lane : ended) {
    if (lane.thread.joinable()) lane.thread.join();
    close(lane.fd);
  }
}

void LocalLanes::HelloRead(Lane* lane) {
  absl::MutexLock lock(&mu_);
  if (!lane->awaiting_hello) return;
  lane->awaiting_hello = false;
  --awaiting_hellos_;
}

absl::StatusOr<LocalLanes::Opened> LocalLanes::Welcome(Lane* lane) {
  const int fd = lane->fd;
  SetTimeout(fd, SO_RCVTIMEO, options_.io_timeout);
  SetTimeout(fd, SO_SNDTIMEO, options_.io_timeout);
  wire::LaneHello hello;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  iovec iov{.iov_base = &hello, .iov_len = sizeof(hello)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  HelloRead(lane);
  if (n < 0) return ErrnoStatus("local lane: hello", errno);
  // Every descriptor that came along is ours to close; the first is the segment.
  std::vector<int> received;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int passed;
      std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      received.push_back(passed);
    }
  }
  struct CloseAllFds {
    std::vector<int>& fds;
    ~CloseAllFds() {
      for (int f : fds) close(f);
    }
  } closer{received};
  if (static_cast<size_t>(n) != sizeof(hello) || hello.magic != wire::kLaneMagic) {
    return absl::InvalidArgumentError("local lane: not a lane hello");
  }
  if (hello.version != wire::kLaneVersion) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "local lane: hello version %d, this server speaks %d", hello.version, wire::kLaneVersion));
  }
  Secret secret;
  std::memcpy(secret.data(), hello.ticket, secret.size());
  ASSIGN_OR_RETURN(PendingTicket ticket, SpendTicket(secret));
  // From here on the ticket's hold is this lane's, released on any refusal.
  auto refuse = [&](absl::Status status) {
    absl::MutexLock lock(&mu_);
    ReleaseLocked(ticket.owner.tenant);
    return status;
  };
  if ((msg.msg_flags & MSG_CTRUNC) != 0 || received.size() != 1) {
    return refuse(absl::InvalidArgumentError(
        "local lane: the hello must carry exactly one descriptor, the segment"));
  }
  const int segment_fd = received[0];
  struct stat st;
  if (fstat(segment_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    return refuse(absl::InvalidArgumentError("local lane: the segment is not a memory file"));
  }
  const int seals = fcntl(segment_fd, F_GET_SEALS);
  // Without F_SEAL_SHRINK the client could truncate the file under the
  // server's mapping, and the server's next access would fault (SIGBUS).
  if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
    return refuse(absl::InvalidArgumentError(
        "local lane: the segment must be a memfd sealed with F_SEAL_SHRINK"));
  }
  const auto bytes = static_cast<uint64_t>(st.st_size);
  if (st.st_size <= 0 || bytes > options_.max_segment_bytes) {
    return refuse(absl::InvalidArgumentError(absl::StrFormat(
        "local lane: segment of %d bytes: need 1..%d", st.st_size, options_.max_segment_bytes)));
  }
  {
    absl::MutexLock lock(&mu_);
    if (mapped_bytes_ + bytes > options_.max_mapped_bytes) {
      ReleaseLocked(ticket.owner.tenant);
      return absl::ResourceExhaustedError(absl::StrFormat(
          "local lane: segments of %d bytes are mapped already (max_mapped_bytes %d)",
          mapped_bytes_, options_.max_mapped_bytes));
    }
    mapped_bytes_ += bytes;
  }
  void* mapped = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, segment_fd, 0);
  if (mapped == MAP_FAILED) {
    const int err = errno;
    absl::MutexLock lock(&mu_);
    mapped_bytes_ -= bytes;
    ReleaseLocked(ticket.owner.tenant);
    return absl::InvalidArgumentError(
        absl::StrCat("local lane: cannot map the segment: ", std::strerror(err)));
  }
  Opened opened{.owner = std::move(ticket.owner),
                .proof = ticket.proof,
                .segment = static_cast<uint8_t*>(mapped),
                .segment_bytes = bytes,
                .client = nullptr};
  if (options_.direct_transfers && hello.probe_address != 0) {
    // The process must hold the ticket it presented where it says: that
    // ties the memory the server will copy to and from to this lane.
    absl::StatusOr<std::unique_ptr<ClientMemory>> client =
        ClientMemory::Attach(fd, hello.probe_address, secret);
    if (client.ok()) {
      opened.client = *std::move(client);
      ++direct_lanes_;
    } else {
      ++direct_declined_;
      KVTIER_LOG(INFO) << "local lane without direct transfers: " << client.status();
    }
  }
  return opened;
}

void LocalLanes::ServeLane(Lane* lane) {
  const int fd = lane->fd;
  absl::StatusOr<Opened> opened = Welcome(lane);
  wire::LaneWelcome welcome;
  if (opened.ok()) {
    std::memcpy(welcome.server_proof, opened->proof.data(), opened->proof.size());
    welcome.segment_bytes = opened->segment_bytes;
    welcome.max_frame_bytes = options_.max_frame_bytes;
    welcome.direct = opened->client != nullptr ? 1 : 0;
  } else {
    ++hellos_refused_;
    welcome.code = static_cast<int32_t>(opened.status().code());
    const std::string message(opened.status().message());
    std::memcpy(welcome.message, message.data(),
                std::min(message.size(), sizeof(welcome.message) - 1));
    KVTIER_LOG(INFO) << "local lane refused: " << opened.status();
  }
  if (opened.ok()) {
    // Counted before the client hears of it.
    ++lanes_opened_;
    ++open_lanes_;
  }
  absl::Status status = SendAll(fd, {BytesOf(welcome)}, "local lane");
  if (opened.ok()) {
    // Requests may be far apart; replies must not wait on a client that
    // stopped reading.
    SetTimeout(fd, SO_RCVTIMEO, absl::ZeroDuration());
    const absl::Span<uint8_t> segment(opened->segment, opened->segment_bytes);
    // The next request of a client that sends them back to back comes
    // sooner than a wakeup would; one that pauses longer costs no core.
    AdaptiveSpin spin(kRequestSpin);
    std::string frame;
    while (status.ok()) {
      const auto idle_since = std::chrono::steady_clock::now();
      // Only while there are cores to spare: with more lanes than half the
      // cores, polling threads would take the cores the others need.
      if (spin.budget().count() > 0 && open_lanes_.load(std::memory_order_relaxed) <=
                                           static_cast<uint64_t>(SpinGate::HalfTheCores())) {
        const SpinGate::Pass pass(spin_gate_);
        if (pass.may_spin()) SpinUntilReadable(fd, absl::FromChrono(spin.budget()));
      }
      wire::FrameHeader header;
      status = RecvExact(fd, &header, sizeof(header), "local lane");
      if (!status.ok()) break;
      spin.OnGap(std::chrono::steady_clock::now() - idle_since);
      if (header.bytes < sizeof(wire::LaneRequestHeader) ||
          header.bytes > std::min(options_.max_frame_bytes, kMaxRequestFrameBytes)) {
        status = absl::InvalidArgumentError(
            absl::StrFormat("local lane: a frame of %d bytes", header.bytes));
        break;
      }
      // Memory follows the bytes that came, not the size the header claims.
      frame.clear();
      while (status.ok() && frame.size() < header.bytes) {
        const size_t have = frame.size();
        frame.resize(std::min<size_t>(header.bytes, have + std::max(kFrameChunkBytes, have)));
        status = RecvExact(fd, frame.data() + have, frame.size() - have, "local lane");
      }
      if (!status.ok()) break;
      wire::LaneRequestHeader request;
      std::memcpy(&request, frame.data(), sizeof(request));
      ++requests_;
      absl::StatusOr<std::string> answer =
          handler_(opened->owner, request.op,
                   absl::string_view(frame).substr(sizeof(request)), segment,
                   opened->client.get());
      wire::LaneReplyHeader reply{.request_id = request.request_id,
                                  .code = static_cast<int32_t>(answer.status().code()),
                                  .reserved = 0};
      std::string payload =
          answer.ok() ? *std::move(answer) : std::string(answer.status().message());
      if (sizeof(reply) + payload.size() > options_.max_frame_bytes) {
        reply.code = static_cast<int32_t>(absl::StatusCode::kResourceExhausted);
        payload = absl::StrFormat(
            "local lane: a reply of %d bytes exceeds max_frame_bytes %d; ask for fewer pages",
            payload.size(), options_.max_frame_bytes);
      }
      const wire::FrameHeader out{static_cast<uint32_t>(sizeof(reply) + payload.size())};
      status = SendAll(fd, {BytesOf(out), BytesOf(reply), payload}, "local lane");
    }
    if (!absl::IsNotFound(status)) {
      KVTIER_LOG(INFO) << "local lane closed: " << status;
    }
    munmap(opened->segment, opened->segment_bytes);
    {
      absl::MutexLock lock(&mu_);
      mapped_bytes_ -= opened->segment_bytes;
      ReleaseLocked(opened->owner.tenant);
    }
    --open_lanes_;  // last: a lane counted open still holds its place
  }
  shutdown(fd, SHUT_RDWR);
  lane->done.store(true);
}

}  // namespace kvtier::store
