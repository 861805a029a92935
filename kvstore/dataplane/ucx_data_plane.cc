#include "kvstore/dataplane/ucx_data_plane.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/secure_random.h"
#include "common/status_macros.h"
#include "kvstore/dataplane/ucx_address_probe.h"
#include "kvstore/dataplane/ucx_data_plane_session.h"
#include "kvtier/v1/data_plane.h"

namespace kvtier::store {
namespace {

// Worker addresses are a few hundred bytes.
constexpr size_t kMaxWorkerAddressBytes = 64 << 10;

}  // namespace

absl::Status DataPlaneOptions::Validate() const {
  if (transfer_timeout_ms == 0 || transfer_timeout_ms > 3'600'000) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "ucx_transfer_timeout_ms %d out of range [1, 3600000]", transfer_timeout_ms));
  }
  if (max_sessions == 0 || max_sessions > 65536) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ucx_max_sessions %d out of range [1, 65536]", max_sessions));
  }
  if (max_pending_transfers == 0) {
    return absl::InvalidArgumentError("max_pending_transfers must be > 0");
  }
  if (window == 0) return absl::InvalidArgumentError("window must be > 0");
  if (address_probe_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("address_probe_timeout must be > 0");
  }
  if (released_slot_quarantine < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("released_slot_quarantine must be >= 0");
  }
  return ucx.Validate();
}

absl::StatusOr<std::unique_ptr<UcxDataPlane>> UcxDataPlane::Create(
    Store* store, const DataPlaneOptions& options,
    const std::shared_ptr<UcxArenaMemory>& ucx_arena) {
  RETURN_IF_ERROR(options.Validate());
  const absl::Span<uint8_t> region = store->RamRegion();
  if (region.empty()) return absl::InvalidArgumentError("the store has no RAM region");
  std::shared_ptr<ucx::UcxContext> context;
  std::shared_ptr<const ucx::UcxMemory> arena;
  if (ucx_arena != nullptr) {
    context = ucx_arena->context();
    arena = ucx_arena->memory();
    if (arena != nullptr &&
        (arena->address() != region.data() || arena->bytes() < region.size())) {
      arena = nullptr;  // the store's region is not that allocation
    }
  } else {
    ASSIGN_OR_RETURN(context, ucx::UcxContext::Create(options.ucx));
  }
  ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxWorker> worker, ucx::UcxWorker::Create(*context));
  if (arena == nullptr) {
    ASSIGN_OR_RETURN(arena, ucx::UcxMemory::Register(*context, region.data(), region.size()));
  }
  std::unique_ptr<UcxDataPlane> plane(new UcxDataPlane(
      store, options, std::move(context), std::move(worker), std::move(arena)));
  RETURN_IF_ERROR(
      ucx::SetMessageHandler(plane->worker_.get(), wire::kRequestMessageId, plane.get()));
  UcxDataPlane* raw = plane.get();
  // Every tagged receive of this worker is posted before ReservePut
  // answers, so a tagged message that finds none is a peer's that no
  // transfer named: dropped, or any client could grow the server's memory.
  plane->progress_ = std::make_unique<ucx::UcxProgressThread>(
      plane->worker_.get(), [raw] { raw->SweepExpired(); }, /*idle_period_ms=*/100,
      absl::Microseconds(500), ucx::UnexpectedTagged::kDrop);
  return plane;
}

UcxDataPlane::UcxDataPlane(Store* store, const DataPlaneOptions& options,
                           std::shared_ptr<ucx::UcxContext> context,
                           std::unique_ptr<ucx::UcxWorker> worker,
                           std::shared_ptr<const ucx::UcxMemory> arena)
    : store_(store),
      options_(options),
      context_(std::move(context)),
      worker_(std::move(worker)),
      arena_(std::move(arena)),
      arena_base_(arena_->address()),
      probe_path_(options.address_probe.empty() ? DefaultUcxProbePath()
                                                : options.address_probe) {}

UcxDataPlane::~UcxDataPlane() {
  progress_.reset();
  absl::flat_hash_map<uint64_t, Transfer> transfers;
  absl::flat_hash_map<SessionId, std::shared_ptr<Session>> sessions;
  {
    absl::MutexLock lock(&mu_);
    transfers.swap(transfers_);
    sessions.swap(sessions_);
  }
  std::vector<Transfer> draining;
  {
    absl::MutexLock lock(&mu_);
    draining.swap(draining_);
  }
  for (auto& [id, t] : transfers) draining.push_back(std::move(t));
  for (Transfer& t : draining) {
    // The progress thread is gone: each receive's destructor cancels it and
    // progresses the worker until UCX has let go of its slot.
    t.receives.clear();
    store_->Abort(std::move(t.reservation));
  }
  // Sessions (their endpoints) go before the worker, which members own.
}

uint64_t UcxDataPlane::NewIdLocked() {
  uint64_t id = 0;
  // A tag base: a tagged transfer's tags (wire::PageTag) never reach
  // another transfer's. Unpredictable, as the tags are all a UCX peer
  // needs to reach a posted receive (UCX matches tags across endpoints).
  while (id == 0 || transfers_.contains(id) || posting_ids_.contains(id)) {
    id = SecureRandom64() & ~wire::kTagIndexMask;
  }
  return id;
}

absl::StatusOr<UcxDataPlane::OpenReply> UcxDataPlane::Open(
    absl::string_view client_worker_address, uint64_t owner,
    const std::function<bool()>& granted) {
  if (client_worker_address.empty() || client_worker_address.size() > kMaxWorkerAddressBytes) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "client_worker_address: %d bytes, need 1..%d", client_worker_address.size(),
        kMaxWorkerAddressBytes));
  }
  // UCX parses an address trusting it; a throwaway process parses it first.
  RETURN_IF_ERROR(ProbeUcxAddress(probe_path_, client_worker_address, options_.ucx,
                                  options_.address_probe_timeout));
  auto session = std::make_shared<Session>();
  session->client_address = std::string(client_worker_address);
  session->owner = owner;
  ASSIGN_OR_RETURN(session->endpoint,
                   ucx::UcxEndpoint::Connect(worker_.get(), client_worker_address));
  // The client's progress thread answers the wireup while it waits for
  // this reply (UcxEndpoint::Flush says why it must be over).
  RETURN_IF_ERROR(session->endpoint->Flush(absl::Now() + ucx::UcxEndpoint::kWireupTimeout));
  OpenReply reply;
  reply.worker_address = worker_->address();
  if (options_.expose_arena) {
    reply.arena_address = reinterpret_cast<uint64_t>(arena_->address());
    reply.arena_bytes = arena_->bytes();
    reply.arena_rkey = arena_->packed_rkey();
  }
  std::vector<std::shared_ptr<Session>> evicted;
  std::vector<Transfer> aborted;
  {
    absl::MutexLock lock(&mu_);
    // Checked under mu_, which CloseAll takes: a grant revoked before this
    // check is refused, one revoked after it finds the session registered.
    if (granted != nullptr && !granted()) {
      return absl::UnavailableError(
          "the credentials that opened this session were reloaded meanwhile; open it again");
    }
    if (sessions_.size() >= options_.max_sessions) {
      // The owner holding the most sessions (the new one counted) gives up
      // its least recently used, so that no tenant opening sessions can
      // close another tenant's while it holds more itself.
      absl::flat_hash_map<uint64_t, size_t> held;
      for (const auto& [id, s] : sessions_) ++held[s->owner];
      ++held[owner];
      size_t most = 0;
      for (const auto& [who, count] : held) most = std::max(most, count);
      auto lru = sessions_.end();
      for (auto it = sessions_.begin(); it != sessions_.end(); ++it) {
        if (held[it->second->owner] != most) continue;
        if (lru == sessions_.end() || it->second->last_use < lru->second->last_use) lru = it;
      }
      KVTIER_LOG(INFO) << "data plane: closing least recently used session="
                       << lru->first.DebugString()
                       << " of the owner holding the most (" << most << ")";
      RemoveSessionLocked(lru->first, &evicted, &aborted);
    }
    // Unpredictable: an id is all a request message needs to use a
    // session (ids need not be tag bases: only transfers' tags are).
    do {
      reply.session_id = SessionId::Random();
    } while (sessions_.contains(reply.session_id));
    session->last_use = ++use_clock_;
    sessions_.emplace(reply.session_id, std::move(session));
  }
  for (Transfer& t : aborted) Retire(std::move(t));
  return reply;
}

void UcxDataPlane::RemoveSessionLocked(const SessionId& session_id,
                                       std::vector<std::shared_ptr<Session>>* sessions,
                                       std::vector<Transfer>* transfers) {
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return;
  sessions->push_back(std::move(it->second));
  sessions_.erase(it);
  for (auto t = transfers_.begin(); t != transfers_.end();) {
    if (t->second.session_id == session_id) {
      transfers->push_back(std::move(t->second));
      transfers_.erase(t++);
    } else {
      ++t;
    }
  }
}

void UcxDataPlane::Close(const SessionId& session_id) {
  std::vector<std::shared_ptr<Session>> sessions;
  std::vector<Transfer> transfers;
  {
    absl::MutexLock lock(&mu_);
    RemoveSessionLocked(session_id, &sessions, &transfers);
  }
  for (Transfer& t : transfers) Retire(std::move(t));
}

size_t UcxDataPlane::CloseAll() {
  std::vector<std::shared_ptr<Session>> sessions;
  std::vector<Transfer> transfers;
  {
    absl::MutexLock lock(&mu_);
    std::vector<SessionId> ids;
    ids.reserve(sessions_.size());
    for (const auto& [id, session] : sessions_) ids.push_back(id);
    for (const SessionId& id : ids) RemoveSessionLocked(id, &sessions, &transfers);
  }
  for (Transfer& t : transfers) Retire(std::move(t));
  return sessions.size();
}

absl::StatusOr<std::shared_ptr<UcxDataPlane::Session>> UcxDataPlane::FindSession(
    const SessionId& session_id) {
  absl::MutexLock lock(&mu_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return SessionNotOpen(session_id);
  it->second->last_use = ++use_clock_;
  return it->second;
}

absl::StatusOr<UcxDataPlane::ReserveReply> UcxDataPlane::ReservePut(
    const SessionId& session_id, absl::Span<const PutSpec> specs, bool tagged, bool make_room) {
  RETURN_IF_ERROR(FindSession(session_id).status());
  {
    absl::MutexLock lock(&mu_);
    if (transfers_.size() + draining_.size() >= options_.max_pending_transfers) {
      return absl::ResourceExhaustedError(
          absl::StrFormat("%d data-plane transfers pending (max_pending_transfers)",
                          transfers_.size() + draining_.size()));
    }
  }
  ASSIGN_OR_RETURN(Reservation reservation,
                   store_->Reserve(specs, {.release_delay = options_.released_slot_quarantine,
                                           .make_room = make_room}));
  ReserveReply reply;
  reply.slots.resize(reservation.size());
  for (size_t i = 0; i < reservation.size(); ++i) {
    const absl::Span<uint8_t> buffer = reservation.buffer(i);
    reply.slots[i].already_present = buffer.empty();
    if (!buffer.empty()) reply.slots[i].arena_offset = buffer.data() - arena_base_;
  }
  {
    absl::MutexLock lock(&mu_);
    if (!sessions_.contains(session_id)) {
      // Closed meanwhile; the reservation aborts as it goes out of scope.
      return absl::NotFoundError(
          absl::StrFormat("data-plane session %s closed", session_id.DebugString()));
    }
    reply.transfer_id = NewIdLocked();
    posting_ids_.insert(reply.transfer_id);
  }
  Transfer transfer{.session_id = session_id,
                    .reservation = std::move(reservation),
                    .expiry = absl::Now() + absl::Milliseconds(options_.transfer_timeout_ms)};
  // Receives are posted without mu_: posting takes UCX's worker lock, which
  // a thread delivering a request message holds while it waits for mu_.
  const absl::Status posted =
      tagged ? PostReceives(reply.transfer_id, &transfer) : absl::OkStatus();
  {
    absl::MutexLock lock(&mu_);
    posting_ids_.erase(reply.transfer_id);
    if (posted.ok() && sessions_.contains(session_id)) {
      transfers_.emplace(reply.transfer_id, std::move(transfer));
      return reply;
    }
  }
  // The session closed while the receives were posted (or posting failed):
  // give the transfer up, waiting for its receives outside mu_.
  Retire(std::move(transfer));
  RETURN_IF_ERROR(posted);
  return absl::NotFoundError(
      absl::StrFormat("data-plane session %s closed", session_id.DebugString()));
}

absl::Status UcxDataPlane::PostReceives(uint64_t transfer_id, Transfer* transfer) {
  for (size_t i = 0; i < transfer->reservation.size(); ++i) {
    const absl::Span<uint8_t> slot = transfer->reservation.buffer(i);
    if (slot.empty()) continue;  // already stored: the client sends nothing
    absl::StatusOr<std::unique_ptr<ucx::UcxTagReceive>> receive =
        ucx::UcxTagReceive::Post(worker_.get(), slot.data(), slot.size(),
                                 wire::PageTag(transfer_id, static_cast<uint32_t>(i)));
    if (!receive.ok()) {
      transfer->receives.clear();  // none matched yet: cancelled at once
      return receive.status();
    }
    transfer->receives.push_back(*std::move(receive));
  }
  return absl::OkStatus();
}

absl::Status UcxDataPlane::AwaitReceives(Transfer* transfer, absl::Time deadline) {
  for (std::unique_ptr<ucx::UcxTagReceive>& receive : transfer->receives) {
    while (!receive->done()) {
      if (worker_->Progress() == 0 && absl::Now() > deadline) {
        return absl::DeadlineExceededError("tagged put: the pages did not all arrive in time");
      }
    }
    if (!receive->status().ok()) {
      return absl::UnavailableError(
          absl::StrCat("tagged put: ", receive->status().ToString()));
    }
  }
  return absl::OkStatus();
}

void UcxDataPlane::Retire(Transfer transfer) {
  bool busy = false;
  for (auto& receive : transfer.receives) {
    receive->Cancel();
    busy = busy || !receive->done();
  }
  if (!busy) {
    transfer.receives.clear();
    store_->Abort(std::move(transfer.reservation));
    return;
  }
  absl::MutexLock lock(&mu_);
  draining_.push_back(std::move(transfer));
}

absl::StatusOr<std::vector<PutResult>> UcxDataPlane::CommitPut(
    const SessionId& session_id, uint64_t transfer_id, absl::Span<const uint64_t> checksums,
    bool may_wait) {
  Transfer transfer;
  {
    absl::MutexLock lock(&mu_);
    auto it = transfers_.find(transfer_id);
    if (it == transfers_.end() || it->second.session_id != session_id) {
      return absl::NotFoundError(absl::StrFormat(
          "transfer %d of session %s is not pending (timed out, aborted or unknown)",
          transfer_id, session_id.DebugString()));
    }
    if (!checksums.empty() && checksums.size() != it->second.reservation.size()) {
      return absl::InvalidArgumentError(
          absl::StrFormat("checksums: %d for a transfer of %d pages", checksums.size(),
                          it->second.reservation.size()));
    }
    if (!may_wait && !it->second.receives.empty()) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "transfer %d is tagged: its commit waits for the transfer, so it goes by RPC",
          transfer_id));
    }
    transfer = std::move(it->second);
    transfers_.erase(it);
  }
  for (size_t i = 0; i < checksums.size(); ++i) transfer.reservation.set_checksum(i, checksums[i]);
  if (absl::Status s = AwaitReceives(&transfer, transfer.expiry); !s.ok()) {
    Retire(std::move(transfer));
    return s;
  }
  transfer.receives.clear();
  return store_->Commit(std::move(transfer.reservation));
}

void UcxDataPlane::AbortPut(const SessionId& session_id, uint64_t transfer_id) {
  Transfer transfer;
  {
    absl::MutexLock lock(&mu_);
    auto it = transfers_.find(transfer_id);
    if (it == transfers_.end() || it->second.session_id != session_id) return;
    transfer = std::move(it->second);
    transfers_.erase(it);
  }
  Retire(std::move(transfer));
}

void UcxDataPlane::SweepExpired() {
  std::vector<Transfer> expired;
  std::vector<Transfer> drained;
  const absl::Time now = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    for (auto it = transfers_.begin(); it != transfers_.end();) {
      if (it->second.expiry <= now) {
        expired.push_back(std::move(it->second));
        transfers_.erase(it++);
      } else {
        ++it;
      }
    }
    drained.swap(draining_);
  }
  if (!expired.empty()) {
    KVTIER_LOG(INFO) << "data plane: aborted expired transfers=" << expired.size();
  }
  // Retire re-queues those whose receives are still busy.
  for (Transfer& t : expired) Retire(std::move(t));
  for (Transfer& t : drained) Retire(std::move(t));
}

void UcxDataPlane::SetRequestHandler(RequestHandler handler) {
  auto shared =
      handler ? std::make_shared<const RequestHandler>(std::move(handler)) : nullptr;
  absl::MutexLock lock(&mu_);
  request_handler_ = std::move(shared);
}

void UcxDataPlane::OnMessage(const ucx::ReceivedMessage& message) {
  wire::RequestHeader header;
  if (message.header.size() != sizeof(header) || message.reply_ep == nullptr) {
    // Nothing to answer to: only a client that does not follow
    // ucx_message.h sends such a message.
    KVTIER_LOG(WARNING) << "data plane: dropped a request message without a reply endpoint or "
                        << "with a " << message.header.size() << "-byte header";
    return;
  }
  std::memcpy(&header, message.header.data(), sizeof(header));
  absl::StatusOr<std::string> served = ServeMessage(header, message);
  const wire::ReplyHeader reply{.request_id = header.request_id,
                               .code = static_cast<int32_t>(served.status().code())};
  std::string payload = served.ok() ? *std::move(served) : std::string(served.status().message());
  if (absl::Status s = ucx::SendMessage(
          message.reply_ep, wire::kReplyMessageId,
          absl::string_view(reinterpret_cast<const char*>(&reply), sizeof(reply)),
          std::move(payload), /*want_reply=*/false);
      !s.ok()) {
    // The client's wait for this reply ends at its deadline.
    KVTIER_LOG(WARNING) << "data plane: cannot answer request " << header.request_id << ": " << s;
  }
}

absl::StatusOr<std::string> UcxDataPlane::ServeMessage(const wire::RequestHeader& header,
                                                       const ucx::ReceivedMessage& message) {
  if (message.data_elsewhere) {
    return absl::ResourceExhaustedError("request too large for a message; send it as an RPC");
  }
  RETURN_IF_ERROR(FindSession(header.session_id).status());
  std::shared_ptr<const RequestHandler> handler;
  {
    absl::MutexLock lock(&mu_);
    handler = request_handler_;
  }
  if (handler == nullptr) return absl::UnimplementedError("this server takes no request messages");
  return (*handler)(header.session_id, header.op, message.data);
}

absl::Status UcxDataPlane::SessionNotOpen(const SessionId& session_id) {
  return absl::NotFoundError(
      absl::StrFormat("data-plane session %s is not open", session_id.DebugString()));
}

absl::StatusOr<uint64_t> UcxDataPlane::SessionOwner(const SessionId& session_id) {
  ASSIGN_OR_RETURN(const std::shared_ptr<Session> session, FindSession(session_id));
  return session->owner;
}

absl::Status UcxDataPlane::CheckSession(const SessionId& session_id, uint64_t owner) {
  ASSIGN_OR_RETURN(const std::shared_ptr<Session> session, FindSession(session_id));
  // Another owner's session answers exactly as one that is not open.
  if (session->owner != owner) return SessionNotOpen(session_id);
  return absl::OkStatus();
}

size_t UcxDataPlane::pending_transfers() const {
  absl::MutexLock lock(&mu_);
  return transfers_.size() + draining_.size();
}

size_t UcxDataPlane::open_sessions() const {
  absl::MutexLock lock(&mu_);
  return sessions_.size();
}

}  // namespace kvtier::store
