// LocalLanes against a hand-rolled client that can say anything: tickets,
// segments and frames, good and hostile.
#include "kvstore/dataplane/local_lanes.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "testing/cross_memory.h"

namespace kvtier::store {
namespace {

constexpr uint64_t kSegment = 1 << 20;

int Connect(const std::string& name) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, name.data(), name.size());
  const auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// A memfd of `bytes` with `seals` added (0: none; then not sealable at all
// unless `allow_sealing`).
int MakeMemfd(uint64_t bytes, int seals, bool allow_sealing = true) {
  const int fd = memfd_create("test-lane", MFD_CLOEXEC | (allow_sealing ? MFD_ALLOW_SEALING : 0));
  EXPECT_GE(fd, 0);
  EXPECT_EQ(ftruncate(fd, static_cast<off_t>(bytes)), 0);
  if (seals != 0) {
    EXPECT_EQ(fcntl(fd, F_ADD_SEALS, seals), 0);
  }
  return fd;
}

// Sends a hello with `ticket` and the descriptors `fds`; `hello` may be
// altered by the caller first.
void SendHello(int sock, const std::string& ticket, const std::vector<int>& fds,
               wire::LaneHello hello = wire::LaneHello()) {
  std::memcpy(hello.ticket, ticket.data(), std::min<size_t>(ticket.size(), sizeof(hello.ticket)));
  iovec iov{.iov_base = &hello, .iov_len = sizeof(hello)};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ASSERT_EQ(sendmsg(sock, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(sizeof(hello)));
}

bool ReadAll(int fd, void* out, size_t bytes) {
  auto* p = static_cast<char*>(out);
  for (size_t done = 0; done < bytes;) {
    const ssize_t n = recv(fd, p + done, bytes - done, 0);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

wire::LaneWelcome ReadWelcome(int sock) {
  wire::LaneWelcome welcome;
  welcome.magic = 0;
  EXPECT_TRUE(ReadAll(sock, &welcome, sizeof(welcome)));
  return welcome;
}

// True when the server has closed `sock` (it reads end of stream).
bool ClosedByServer(int sock) {
  char byte;
  return recv(sock, &byte, 1, 0) == 0;
}

struct Reply {
  int32_t code = -1;
  std::string payload;
};

Reply Call(int sock, uint32_t op, const std::string& payload) {
  const wire::FrameHeader frame{static_cast<uint32_t>(sizeof(wire::LaneRequestHeader) + payload.size())};
  const wire::LaneRequestHeader header{.request_id = 7, .op = op, .reserved = 0};
  std::string out(reinterpret_cast<const char*>(&frame), sizeof(frame));
  out.append(reinterpret_cast<const char*>(&header), sizeof(header));
  out += payload;
  EXPECT_EQ(send(sock, out.data(), out.size(), MSG_NOSIGNAL), static_cast<ssize_t>(out.size()));
  Reply reply;
  wire::FrameHeader in;
  wire::LaneReplyHeader reply_header;
  if (!ReadAll(sock, &in, sizeof(in)) || !ReadAll(sock, &reply_header, sizeof(reply_header))) {
    return reply;
  }
  EXPECT_EQ(reply_header.request_id, 7u);
  reply.code = reply_header.code;
  reply.payload.resize(in.bytes - sizeof(reply_header));
  EXPECT_TRUE(ReadAll(sock, reply.payload.data(), reply.payload.size()));
  return reply;
}

class LocalLanesTest : public ::testing::Test {
 protected:
  void Start(LocalLaneOptions options = LocalLaneOptions()) {
    // Op 1 answers "<tenant>:<payload>:<the segment's first bytes>"; op 2
    // writes the payload at the segment's start; op 3 fails.
    auto lanes = LocalLanes::Start(
        options, [this](const LaneOwner& owner, uint32_t op, absl::string_view request,
                        absl::Span<uint8_t> segment,
                        const ClientMemory* client) -> absl::StatusOr<std::string> {
          {
            absl::MutexLock lock(&mu_);
            segment_sizes_.push_back(segment.size());
          }
          switch (op) {
            case 1:
              return absl::StrCat(owner.tenant, ":", request, ":",
                                  absl::string_view(reinterpret_cast<const char*>(segment.data()), 5));
            case 2:
              std::memcpy(segment.data(), request.data(), request.size());
              return std::string("written");
            case 4: {
              // Writes the payload after its first 8 bytes (an address in
              // the client's memory) there.
              if (client == nullptr) return absl::FailedPreconditionError("no direct transfers");
              uint64_t address;
              std::memcpy(&address, request.data(), sizeof(address));
              const absl::string_view text = request.substr(sizeof(address));
              const absl::Span<const uint8_t> from(
                  reinterpret_cast<const uint8_t*>(text.data()), text.size());
              const ClientRange to{.address = address, .bytes = text.size()};
              RETURN_IF_ERROR(client->Write({&from, 1}, {&to, 1}));
              return std::string("written directly");
            }
            default:
              return absl::InvalidArgumentError("op 3 fails");
          }
        });
    ASSERT_TRUE(lanes.ok()) << lanes.status();
    lanes_ = *std::move(lanes);
  }

  void TearDown() override {
    for (int fd : fds_) close(fd);
    lanes_.reset();
    for (uint8_t* mapping : mappings_) munmap(mapping, kSegment);
  }

  int Track(int fd) {
    fds_.push_back(fd);
    return fd;
  }

  LocalLanes::Ticket Issue(uint64_t tenant) {
    absl::StatusOr<LocalLanes::Ticket> ticket =
        lanes_->Issue(LaneOwner{.tenant = tenant, .admin = false, .may_write = true, .name = "t"});
    EXPECT_TRUE(ticket.ok()) << ticket.status();
    return ticket.ok() ? *ticket : LocalLanes::Ticket();
  }

  // Opens a lane for `tenant` with a sealed segment; its socket and the
  // client's mapping of the segment.
  struct Open {
    int sock = -1;
    uint8_t* segment = nullptr;
  };
  Open OpenLane(uint64_t tenant) {
    const LocalLanes::Ticket ticket = Issue(tenant);
    Open open;
    open.sock = Track(Connect(ticket.socket_name));
    const int memfd = MakeMemfd(kSegment, F_SEAL_SHRINK | F_SEAL_GROW);
    SendHello(open.sock, ticket.ticket, {memfd});
    open.segment = static_cast<uint8_t*>(
        mmap(nullptr, kSegment, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0));
    close(memfd);
    const wire::LaneWelcome welcome = ReadWelcome(open.sock);
    EXPECT_EQ(welcome.code, 0) << welcome.message;
    EXPECT_EQ(std::string(reinterpret_cast<const char*>(welcome.server_proof), 16),
              ticket.server_proof);
    EXPECT_EQ(welcome.segment_bytes, kSegment);
    mappings_.push_back(open.segment);
    return open;
  }

  // Opens a lane for `tenant` whose hello offers direct transfers with the
  // probe address `probe` gives for the ticket; the welcome.
  wire::LaneWelcome OpenOffering(uint64_t tenant,
                                 const std::function<uint64_t(const std::string&)>& probe,
                                 int* sock) {
    const LocalLanes::Ticket ticket = Issue(tenant);
    *sock = Track(Connect(ticket.socket_name));
    wire::LaneHello hello;
    hello.probe_address = probe(ticket.ticket);
    SendHello(*sock, ticket.ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK)}, hello);
    return ReadWelcome(*sock);
  }

  // The code of the welcome a hello with `fds` (and `hello`) gets.
  int32_t HelloCode(const std::string& ticket, const std::vector<int>& fds,
                    wire::LaneHello hello = wire::LaneHello()) {
    const int sock = Track(Connect(lanes_->socket_name()));
    SendHello(sock, ticket, fds, hello);
    for (int fd : fds) close(fd);
    return ReadWelcome(sock).code;
  }

  // Waits (bounded) until the server counts `n` open lanes.
  void AwaitOpenLanes(uint64_t n) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (lanes_->stats().open_lanes != n && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(5));
    }
    ASSERT_EQ(lanes_->stats().open_lanes, n);
  }

  std::unique_ptr<LocalLanes> lanes_;
  std::vector<int> fds_;
  std::vector<uint8_t*> mappings_;
  absl::Mutex mu_;
  std::vector<size_t> segment_sizes_ ABSL_GUARDED_BY(mu_);
};

constexpr int32_t kPermissionDenied = static_cast<int32_t>(absl::StatusCode::kPermissionDenied);
constexpr int32_t kInvalidArgument = static_cast<int32_t>(absl::StatusCode::kInvalidArgument);
constexpr int32_t kResourceExhausted = static_cast<int32_t>(absl::StatusCode::kResourceExhausted);

TEST_F(LocalLanesTest, ALaneActsForItsTicketsOwnerOnTheClientsSegment) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Open lane = OpenLane(42);
  std::memcpy(lane.segment, "HELLO", 5);
  Reply reply = Call(lane.sock, 1, "ping");
  EXPECT_EQ(reply.code, 0);
  EXPECT_EQ(reply.payload, "42:ping:HELLO");
  // The server writes into the client's memory; the client sees it.
  reply = Call(lane.sock, 2, "WORLD");
  EXPECT_EQ(reply.code, 0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(lane.segment), 5), "WORLD");
  // A handler's error is the reply's; the lane stays.
  reply = Call(lane.sock, 3, "");
  EXPECT_EQ(reply.code, kInvalidArgument);
  EXPECT_EQ(reply.payload, "op 3 fails");
  EXPECT_EQ(Call(lane.sock, 1, "again").payload, "42:again:WORLD");
  absl::MutexLock lock(&mu_);
  EXPECT_EQ(segment_sizes_, std::vector<size_t>(4, kSegment));
  EXPECT_EQ(lanes_->stats().mapped_bytes, kSegment);
}

TEST_F(LocalLanesTest, ATicketOpensOneLaneAndOnlyItsExactBytesDo) {
  ASSERT_NO_FATAL_FAILURE(Start());
  const LocalLanes::Ticket ticket = Issue(1);
  EXPECT_EQ(HelloCode(ticket.ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK)}), 0);
  EXPECT_EQ(HelloCode(ticket.ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK)}), kPermissionDenied);

  // A ticket with one byte changed: an unknown one (first 8 bytes), or one
  // that names a pending ticket (last 8), which that try spends.
  const LocalLanes::Ticket other = Issue(1);
  std::string forged = other.ticket;
  forged[0] ^= 1;
  EXPECT_EQ(HelloCode(forged, {MakeMemfd(kSegment, F_SEAL_SHRINK)}), kPermissionDenied);
  forged = other.ticket;
  forged[15] ^= 1;
  EXPECT_EQ(HelloCode(forged, {MakeMemfd(kSegment, F_SEAL_SHRINK)}), kPermissionDenied);
  EXPECT_EQ(HelloCode(other.ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK)}), kPermissionDenied);
  EXPECT_EQ(lanes_->stats().hellos_refused, 4u);
}

TEST_F(LocalLanesTest, AnExpiredTicketOpensNothing) {
  LocalLaneOptions options;
  options.ticket_ttl = absl::Milliseconds(20);
  ASSERT_NO_FATAL_FAILURE(Start(options));
  const LocalLanes::Ticket ticket = Issue(1);
  absl::SleepFor(absl::Milliseconds(60));
  EXPECT_EQ(HelloCode(ticket.ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK)}), kPermissionDenied);
}

TEST_F(LocalLanesTest, OnlyASealedMemfdOfABoundedSizeIsMapped) {
  LocalLaneOptions options;
  options.max_segment_bytes = 4 * kSegment;
  options.max_mapped_bytes = 4 * kSegment;
  ASSERT_NO_FATAL_FAILURE(Start(options));
  // No descriptor, two, an unsealed memfd, one that cannot be sealed, a
  // regular file, a socket, an empty segment and one over the bound.
  EXPECT_EQ(HelloCode(Issue(1).ticket, {}), kInvalidArgument);
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK),
                                         MakeMemfd(kSegment, F_SEAL_SHRINK)}),
            kInvalidArgument);
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(kSegment, 0)}), kInvalidArgument);
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(kSegment, 0, /*allow_sealing=*/false)}),
            kInvalidArgument);
  char path[] = "/tmp/kvtier-lane-test-XXXXXX";
  const int file = mkstemp(path);
  ASSERT_GE(file, 0);
  unlink(path);
  ASSERT_EQ(ftruncate(file, kSegment), 0);
  EXPECT_EQ(HelloCode(Issue(1).ticket, {file}), kInvalidArgument);
  EXPECT_EQ(HelloCode(Issue(1).ticket, {socket(AF_UNIX, SOCK_STREAM, 0)}), kInvalidArgument);
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(0, F_SEAL_SHRINK)}), kInvalidArgument);
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(5 * kSegment, F_SEAL_SHRINK)}),
            kInvalidArgument);
  // Within the bound for all segments together, then past it.
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(3 * kSegment, F_SEAL_SHRINK)}), 0);
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(2 * kSegment, F_SEAL_SHRINK)}),
            kResourceExhausted);
  // A refused hello gives its ticket's place back: one lane is held.
  AwaitOpenLanes(1);
  EXPECT_EQ(lanes_->stats().mapped_bytes, 3 * kSegment);
}

TEST_F(LocalLanesTest, AHelloOfAnotherMagicOrVersionIsRefused) {
  ASSERT_NO_FATAL_FAILURE(Start());
  wire::LaneHello hello;
  hello.magic = 0x12345678;
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK)}, hello),
            kInvalidArgument);
  hello = wire::LaneHello();
  hello.version = 99;
  EXPECT_EQ(HelloCode(Issue(1).ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK)}, hello),
            kInvalidArgument);
}

TEST_F(LocalLanesTest, ABadFrameClosesOnlyItsLane) {
  LocalLaneOptions options;
  options.max_frame_bytes = 4096;
  ASSERT_NO_FATAL_FAILURE(Start(options));
  Open good = OpenLane(1);
  Open big = OpenLane(1);
  Open small = OpenLane(2);
  const wire::FrameHeader too_big{4097};
  ASSERT_EQ(send(big.sock, &too_big, sizeof(too_big), MSG_NOSIGNAL), 4);
  EXPECT_TRUE(ClosedByServer(big.sock));
  const wire::FrameHeader too_small{sizeof(wire::LaneRequestHeader) - 1};
  ASSERT_EQ(send(small.sock, &too_small, sizeof(too_small), MSG_NOSIGNAL), 4);
  EXPECT_TRUE(ClosedByServer(small.sock));
  EXPECT_EQ(Call(good.sock, 1, "still").payload, absl::StrCat("1:still:", std::string(5, '\0')));
  AwaitOpenLanes(1);
}

TEST_F(LocalLanesTest, AReplyOverTheFrameBoundIsAnErrorNotACut) {
  LocalLaneOptions options;
  options.max_frame_bytes = 4096;
  ASSERT_NO_FATAL_FAILURE(Start(options));
  Open lane = OpenLane(1);
  // The request fits (16 + 4080 bytes); its echo with more does not.
  const Reply reply = Call(lane.sock, 1, std::string(4080, 'x'));
  EXPECT_EQ(reply.code, kResourceExhausted);
  EXPECT_EQ(Call(lane.sock, 1, "ok").code, 0);
}

TEST_F(LocalLanesTest, LanesAreBoundedPerTenantAndInAll) {
  LocalLaneOptions options;
  options.max_lanes = 3;
  options.max_lanes_per_tenant = 2;
  ASSERT_NO_FATAL_FAILURE(Start(options));
  const LaneOwner a{.tenant = 1, .admin = false, .may_write = true, .name = "a"};
  const LaneOwner b{.tenant = 2, .admin = false, .may_write = true, .name = "b"};
  const LaneOwner c{.tenant = 3, .admin = false, .may_write = true, .name = "c"};
  Open first = OpenLane(1);
  ASSERT_TRUE(lanes_->Issue(a).ok());  // a ticket holds a place as a lane does
  EXPECT_EQ(lanes_->Issue(a).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(lanes_->Issue(b).ok());
  EXPECT_EQ(lanes_->Issue(c).status().code(), absl::StatusCode::kResourceExhausted);
  // A lane that ends gives its place back.
  shutdown(first.sock, SHUT_RDWR);
  AwaitOpenLanes(0);
  EXPECT_TRUE(lanes_->Issue(c).ok());
}

TEST_F(LocalLanesTest, CloseAllEndsLanesAndSpendsTickets) {
  ASSERT_NO_FATAL_FAILURE(Start());
  Open lane = OpenLane(1);
  const LocalLanes::Ticket pending = Issue(1);
  lanes_->CloseAll();
  EXPECT_TRUE(ClosedByServer(lane.sock));
  EXPECT_EQ(HelloCode(pending.ticket, {MakeMemfd(kSegment, F_SEAL_SHRINK)}), kPermissionDenied);
  AwaitOpenLanes(0);
  EXPECT_EQ(lanes_->stats().mapped_bytes, 0u);
  // New lanes open as before.
  Open again = OpenLane(1);
  EXPECT_EQ(Call(again.sock, 1, "x").code, 0);
}

TEST_F(LocalLanesTest, AConnectionThatSaysNothingIsDropped) {
  LocalLaneOptions options;
  options.io_timeout = absl::Milliseconds(50);
  ASSERT_NO_FATAL_FAILURE(Start(options));
  const int sock = Track(Connect(lanes_->socket_name()));
  const wire::LaneWelcome welcome = ReadWelcome(sock);
  EXPECT_NE(welcome.code, 0);
  EXPECT_TRUE(ClosedByServer(sock));
  EXPECT_EQ(lanes_->stats().open_lanes, 0u);
}

// The socket needs no ticket: connections that never say hello are held
// at most 16 at a time, the oldest dropped for the newest, and none of
// them keeps a client with a ticket from opening its lane.
TEST_F(LocalLanesTest, SilentConnectionsCannotKeepLanesOut) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<int> silent;
  for (int i = 0; i < 40; ++i) silent.push_back(Track(Connect(lanes_->socket_name())));
  // Each new one past 16 drops the oldest then waiting.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (lanes_->stats().hellos_evicted < 24 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(1));
  }
  EXPECT_EQ(lanes_->stats().hellos_evicted, 24u);
  for (int i = 0; i < 24; ++i) EXPECT_TRUE(ClosedByServer(silent[i])) << i;
  for (int round = 0; round < 3; ++round) {
    Open lane = OpenLane(1);
    EXPECT_EQ(Call(lane.sock, 1, "in").code, 0) << round;
    silent.push_back(Track(Connect(lanes_->socket_name())));
  }
  AwaitOpenLanes(3);
}

// A frame's header claims its size; the server's memory follows the bytes
// that come. A request frame over 16 MiB is refused whatever the bound.
TEST_F(LocalLanesTest, AFrameHeaderAloneHoldsNoMemory) {
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_EQ(lanes_->options().max_frame_bytes, uint32_t{256} << 20);
  auto rss_kib = [] {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
    }
    return -1LL;
  };
  const long long before = rss_kib();
  std::vector<Open> lanes;
  for (int i = 0; i < 4; ++i) {
    lanes.push_back(OpenLane(1 + i));
    const wire::FrameHeader claim{(uint32_t{16} << 20)};
    ASSERT_EQ(send(lanes.back().sock, &claim, sizeof(claim), MSG_NOSIGNAL), 4);
    const std::string start(sizeof(wire::LaneRequestHeader), '\0');
    ASSERT_EQ(send(lanes.back().sock, start.data(), start.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(start.size()));
  }
  absl::SleepFor(absl::Milliseconds(100));
  // Four claims of 16 MiB took at most a chunk each, not 64 MiB.
  EXPECT_LT(rss_kib() - before, 16 * 1024) << "KiB";
  Open over = OpenLane(9);
  const wire::FrameHeader too_big{(uint32_t{16} << 20) + 1};
  ASSERT_EQ(send(over.sock, &too_big, sizeof(too_big), MSG_NOSIGNAL), 4);
  EXPECT_TRUE(ClosedByServer(over.sock));
}

TEST(LocalLaneOptionsTest, ValidateNamesTheBadOption) {
  LocalLaneOptions options;
  EXPECT_TRUE(options.Validate().ok());
  options.max_lanes_per_tenant = options.max_lanes + 1;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options = LocalLaneOptions();
  options.max_segment_bytes = options.max_mapped_bytes + 1;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options = LocalLaneOptions();
  options.max_frame_bytes = 100;
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
  options = LocalLaneOptions();
  options.ticket_ttl = absl::ZeroDuration();
  EXPECT_EQ(options.Validate().code(), absl::StatusCode::kInvalidArgument);
}

// A probe that keeps the ticket in `*held` and names where it lies.
std::function<uint64_t(const std::string&)> HoldAt(std::string* held) {
  return [held](const std::string& ticket) {
    *held = ticket;
    return reinterpret_cast<uintptr_t>(held->data());
  };
}

std::string DirectWrite(uint64_t address, absl::string_view text) {
  std::string request(reinterpret_cast<const char*>(&address), sizeof(address));
  request.append(text.data(), text.size());
  return request;
}

TEST_F(LocalLanesTest, DirectTransfersNeedTheTicketWhereTheClientSaysItIs) {
  if (!kvtier::testing::CrossMemoryAttachWorks()) {
    GTEST_SKIP() << "this host refuses cross-memory attach";
  }
  ASSERT_NO_FATAL_FAILURE(Start());
  // The probe's memory: the ticket, and the ticket with its last byte off.
  std::string held;
  std::string wrong;
  char target[16] = "..............";
  int sock = -1;
  wire::LaneWelcome welcome = OpenOffering(1, HoldAt(&held), &sock);
  ASSERT_EQ(welcome.code, 0) << welcome.message;
  EXPECT_EQ(welcome.direct, 1u);
  Reply reply = Call(sock, 4, DirectWrite(reinterpret_cast<uintptr_t>(target), "DIRECT"));
  EXPECT_EQ(reply.code, 0) << reply.payload;
  EXPECT_EQ(reply.payload, "written directly");
  EXPECT_EQ(std::string(target, 8), "DIRECT..");
  // A range the process does not map: an error for that request only.
  reply = Call(sock, 4, DirectWrite(8, "x"));
  EXPECT_EQ(reply.code, kInvalidArgument) << reply.payload;
  EXPECT_EQ(Call(sock, 4, DirectWrite(reinterpret_cast<uintptr_t>(target) + 6, "!")).code, 0);
  EXPECT_EQ(std::string(target, 8), "DIRECT!.");

  // Other bytes, an unmapped address, or none: the lane opens without.
  welcome = OpenOffering(
      1,
      [&](const std::string& ticket) {
        wrong = ticket;
        wrong.back() ^= 1;
        return reinterpret_cast<uintptr_t>(wrong.data());
      },
      &sock);
  ASSERT_EQ(welcome.code, 0) << welcome.message;
  EXPECT_EQ(welcome.direct, 0u);
  constexpr int32_t kFailedPrecondition =
      static_cast<int32_t>(absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Call(sock, 4, DirectWrite(reinterpret_cast<uintptr_t>(target), "NO")).code,
            kFailedPrecondition);
  EXPECT_EQ(OpenOffering(1, [](const std::string&) { return uint64_t{8}; }, &sock).direct, 0u);
  EXPECT_EQ(OpenOffering(1, [](const std::string&) { return uint64_t{0}; }, &sock).direct, 0u);
  EXPECT_EQ(std::string(target, 8), "DIRECT!.");
  const LocalLanes::Stats stats = lanes_->stats();
  EXPECT_EQ(stats.direct_lanes, 1u);
  EXPECT_EQ(stats.direct_declined, 2u);  // not counted: the hello that offered none
  EXPECT_EQ(stats.lanes_opened, 4u);
}

TEST_F(LocalLanesTest, AServerWithoutDirectTransfersDeclinesTheOffer) {
  LocalLaneOptions options;
  options.direct_transfers = false;
  ASSERT_NO_FATAL_FAILURE(Start(options));
  std::string held;
  int sock = -1;
  const wire::LaneWelcome welcome = OpenOffering(1, HoldAt(&held), &sock);
  ASSERT_EQ(welcome.code, 0) << welcome.message;
  EXPECT_EQ(welcome.direct, 0u);
  EXPECT_EQ(lanes_->stats().direct_lanes, 0u);
  EXPECT_EQ(lanes_->stats().direct_declined, 0u);
}

}  // namespace
}  // namespace kvtier::store
