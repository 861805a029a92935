#include "client/data_plane.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/spin.h"
#include "common/status_macros.h"
#include "kvtier/v1/data_plane.h"

namespace kvtier::client {
namespace {

constexpr uint64_t kMinRegionBytes = uint64_t{1} << 20;
// How long a Call progresses the worker itself before it sleeps until the
// progress thread delivers its reply.
constexpr absl::Duration kSpinTime = absl::Microseconds(20);

}  // namespace

ClientDataPlane::RegionLease::~RegionLease() {
  if (memory_ != nullptr) owner_->ReturnRegion(std::move(memory_));
}

absl::StatusOr<std::unique_ptr<ClientDataPlane>> ClientDataPlane::Create(
    const ucx::UcxOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxContext> context, ucx::UcxContext::Create(options));
  ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxWorker> worker, ucx::UcxWorker::Create(*context));
  std::unique_ptr<ClientDataPlane> plane(
      new ClientDataPlane(std::move(context), std::move(worker)));
  RETURN_IF_ERROR(
      ucx::SetMessageHandler(plane->worker_.get(), wire::kReplyMessageId, plane.get()));
  // Callers wait for their own transfers and replies, progressing the
  // worker themselves first; this thread needs no spin of its own. A get
  // posts its receives before it asks for the pages, so a tagged message
  // that finds none came after its receive gave up (a get past its
  // deadline): dropped, not kept by UCX for good.
  plane->progress_ = std::make_unique<ucx::UcxProgressThread>(
      plane->worker_.get(), /*on_idle=*/nullptr, /*idle_period_ms=*/100, absl::ZeroDuration(),
      ucx::UnexpectedTagged::kDrop);
  return plane;
}

ClientDataPlane::~ClientDataPlane() {
  progress_.reset();
  std::vector<std::unique_ptr<Parked>> parked;
  {
    absl::MutexLock lock(&mu_);
    parked.swap(parked_);
  }
  // Each receive's destructor progresses the worker until it is done; the
  // regions then return to the pool, which is cleared below.
  parked.clear();
  absl::MutexLock lock(&mu_);
  connection_.reset();
  idle_regions_.clear();
}

void ClientDataPlane::Park(RegionLease region,
                           std::vector<std::unique_ptr<ucx::UcxTagReceive>> receives) {
  for (auto& receive : receives) receive->Cancel();
  absl::MutexLock lock(&mu_);
  parked_.push_back(std::unique_ptr<Parked>(
      new Parked{.region = std::move(region), .receives = std::move(receives)}));
}

std::shared_ptr<const ClientDataPlane::Connection> ClientDataPlane::connection() const {
  absl::MutexLock lock(&mu_);
  return connection_;
}

absl::StatusOr<std::shared_ptr<const ClientDataPlane::Connection>> ClientDataPlane::Attach(
    const v1::OpenDataPlaneResponse& reply) {
  absl::StatusOr<wire::SessionId> session = wire::SessionId::FromBytes(reply.session_id());
  if (!session.ok() || session->IsZero()) {
    return absl::InvalidArgumentError(
        absl::StrCat("OpenDataPlane reply without a session: ",
                     session.ok() ? "session_id is zero" : session.status().message()));
  }
  // A server that does not trust its clients with its memory sends no arena.
  const bool arena = reply.arena_bytes() != 0 || !reply.arena_rkey().empty();
  if (arena && (reply.arena_bytes() == 0 || reply.arena_rkey().empty())) {
    return absl::InvalidArgumentError("OpenDataPlane reply with half an arena");
  }
  auto connection = std::make_shared<Connection>();
  connection->session_id = *session;
  connection->arena_address = reply.arena_address();
  connection->arena_bytes = reply.arena_bytes();
  ASSIGN_OR_RETURN(connection->endpoint,
                   ucx::UcxEndpoint::Connect(worker_.get(), reply.server_worker_address()));
  // UcxEndpoint::Flush: the wireup must be over before the session is used.
  RETURN_IF_ERROR(connection->endpoint->Flush(absl::Now() + ucx::UcxEndpoint::kWireupTimeout));
  connection->am_transport = connection->endpoint->AmTransport();
  if (arena) {
    ASSIGN_OR_RETURN(connection->arena_rkey,
                     connection->endpoint->UnpackKey(reply.arena_rkey()));
    // Not mapped is the common case off this host; the endpoint serves then.
    if (absl::StatusOr<uint8_t*> mapped =
            connection->arena_rkey->MappedAddress(reply.arena_address());
        mapped.ok()) {
      connection->arena_mapped = *mapped;
    }
  }
  std::shared_ptr<const Connection> replaced;  // closed outside mu_ (ReturnRegion says why)
  {
    absl::MutexLock lock(&mu_);
    replaced = std::move(connection_);
    connection_ = connection;
  }
  return std::shared_ptr<const Connection>(connection);
}

absl::StatusOr<std::shared_ptr<const ClientDataPlane::Connection>> ClientDataPlane::ConnectOnce(
    absl::FunctionRef<absl::StatusOr<v1::OpenDataPlaneResponse>()> open, bool* opened) {
  *opened = false;
  absl::MutexLock lock(&open_mu_);
  if (std::shared_ptr<const Connection> current = connection(); current != nullptr) {
    return current;  // opened by another client of this plane meanwhile
  }
  ASSIGN_OR_RETURN(const v1::OpenDataPlaneResponse reply, open());
  ASSIGN_OR_RETURN(std::shared_ptr<const Connection> attached, Attach(reply));
  *opened = true;
  return attached;
}

void ClientDataPlane::Detach(const std::shared_ptr<const Connection>& connection) {
  std::shared_ptr<const Connection> detached;  // closed outside mu_ (ReturnRegion says why)
  absl::MutexLock lock(&mu_);
  if (connection_ == connection) detached = std::move(connection_);
}

absl::StatusOr<ClientDataPlane::RegionLease> ClientDataPlane::LeaseRegion(uint64_t bytes) {
  // Parked receives are tested without mu_: testing takes UCX's worker
  // lock, which the thread delivering a reply holds while it waits for mu_.
  std::vector<std::unique_ptr<Parked>> parked;
  {
    absl::MutexLock lock(&mu_);
    parked.swap(parked_);
  }
  std::vector<std::unique_ptr<Parked>> busy;
  for (std::unique_ptr<Parked>& p : parked) {
    bool done = true;
    for (auto& receive : p->receives) done = receive->done() && done;
    // Done: destroyed below, returning its region to the pool.
    if (!done) busy.push_back(std::move(p));
  }
  parked.clear();
  if (!busy.empty()) {
    absl::MutexLock lock(&mu_);
    for (std::unique_ptr<Parked>& p : busy) parked_.push_back(std::move(p));
  }
  {
    absl::MutexLock lock(&mu_);
    // The smallest idle region that is large enough.
    auto best = idle_regions_.end();
    for (auto it = idle_regions_.begin(); it != idle_regions_.end(); ++it) {
      if ((*it)->bytes() >= bytes && (best == idle_regions_.end() || (*it)->bytes() < (*best)->bytes())) {
        best = it;
      }
    }
    if (best != idle_regions_.end()) {
      std::unique_ptr<ucx::UcxMemory> memory = std::move(*best);
      idle_regions_.erase(best);
      return RegionLease(this, std::move(memory));
    }
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxMemory> memory,
                   ucx::UcxMemory::Allocate(*context_, std::max(bytes, kMinRegionBytes)));
  return RegionLease(this, std::move(memory));
}

absl::StatusOr<std::string> ClientDataPlane::Call(const Connection& connection, uint32_t op,
                                                  std::string request, absl::Time deadline) {
  auto pending = std::make_shared<PendingReply>();
  wire::RequestHeader header{.session_id = connection.session_id, .op = op};
  {
    absl::MutexLock lock(&mu_);
    header.request_id = ++next_request_id_;
    pending_.emplace(header.request_id, pending);
  }
  absl::Status status = connection.endpoint->Use([&](ucp_ep_h ep) {
    return ucx::SendMessage(
        ep, wire::kRequestMessageId,
        absl::string_view(reinterpret_cast<const char*>(&header), sizeof(header)),
        std::move(request), /*want_reply=*/true);
  });
  if (status.ok()) {
    // Progressing here answers fastest; past kSpinTime, or at once where
    // enough other calls spin already, the caller sleeps until the progress
    // thread delivers the reply, so that waiting callers do not starve the
    // server where cores are few.
    // (SpinGate::Waiters: half the cores this process may run on; measured
    // on 2 cores: 8 spinning callers cost 8-client gets a third of their
    // rate.)
    const SpinGate::Pass pass(SpinGate::Waiters());
    if (pass.may_spin()) {
      const absl::Time spin_until = std::min(deadline, absl::Now() + kSpinTime);
      while (!pending->done.HasBeenNotified() && absl::Now() < spin_until) worker_->Progress();
    }
    if (!pending->done.WaitForNotificationWithDeadline(deadline)) {
      status = absl::DeadlineExceededError("no reply to a data-plane request message");
    }
  } else {
    status = absl::UnavailableError(status.message());
  }
  {
    absl::MutexLock lock(&mu_);
    pending_.erase(header.request_id);
  }
  if (!status.ok()) return status;
  if (pending->code != 0) {
    const bool known = pending->code > 0 && pending->code <= static_cast<int32_t>(
                                                                  absl::StatusCode::kUnauthenticated);
    return absl::Status(known ? static_cast<absl::StatusCode>(pending->code)
                              : absl::StatusCode::kInternal,
                        pending->payload);
  }
  return std::move(pending->payload);
}

void ClientDataPlane::OnMessage(const ucx::ReceivedMessage& message) {
  wire::ReplyHeader header;
  if (message.header.size() != sizeof(header)) return;  // not a reply of ours
  std::memcpy(&header, message.header.data(), sizeof(header));
  std::shared_ptr<PendingReply> pending;
  {
    absl::MutexLock lock(&mu_);
    auto it = pending_.find(header.request_id);
    if (it == pending_.end()) return;  // its call gave up already
    pending = it->second;
  }
  if (pending->done.HasBeenNotified()) return;  // a duplicate
  if (message.data_elsewhere) {
    pending->code = static_cast<int32_t>(absl::StatusCode::kResourceExhausted);
    pending->payload = "reply too large for a message";
  } else {
    pending->code = header.code;
    pending->payload = std::string(message.data);
  }
  pending->done.Notify();
}

void ClientDataPlane::ReturnRegion(std::unique_ptr<ucx::UcxMemory> memory) {
  // UCX objects are released without mu_: releasing takes UCX's locks, which
  // the thread delivering a reply holds while it waits for mu_. Declared
  // before the lock, `unused` is destroyed after it is released.
  std::unique_ptr<ucx::UcxMemory> unused;
  absl::MutexLock lock(&mu_);
  if (idle_regions_.size() < kMaxIdleRegions) {
    idle_regions_.push_back(std::move(memory));
    return;
  }
  // Full: keep the larger ones.
  auto smallest = std::min_element(idle_regions_.begin(), idle_regions_.end(),
                                   [](const auto& a, const auto& b) { return a->bytes() < b->bytes(); });
  if ((*smallest)->bytes() < memory->bytes()) {
    unused = std::move(*smallest);
    *smallest = std::move(memory);
  } else {
    unused = std::move(memory);
  }
}

}  // namespace kvtier::client
