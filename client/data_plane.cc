#include "client/data_plane.h"

#include <algorithm>
#include <utility>

#include "common/status_macros.h"

namespace kvtier::client {
namespace {

constexpr uint64_t kMinRegionBytes = uint64_t{1} << 20;

}  // namespace

ClientDataPlane::RegionLease::~RegionLease() {
  if (memory_ != nullptr) owner_->ReturnRegion(std::move(memory_));
}

absl::StatusOr<std::unique_ptr<ClientDataPlane>> ClientDataPlane::Create() {
  ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxContext> context, ucx::UcxContext::Create());
  ASSIGN_OR_RETURN(std::unique_ptr<ucx::UcxWorker> worker, ucx::UcxWorker::Create(*context));
  std::unique_ptr<ClientDataPlane> plane(
      new ClientDataPlane(std::move(context), std::move(worker)));
  plane->progress_ = std::make_unique<ucx::UcxProgressThread>(plane->worker_.get());
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
  if (reply.session_id() == 0 || reply.arena_bytes() == 0) {
    return absl::InvalidArgumentError("OpenDataPlane reply without session or arena");
  }
  auto connection = std::make_shared<Connection>();
  connection->session_id = reply.session_id();
  connection->arena_address = reply.arena_address();
  connection->arena_bytes = reply.arena_bytes();
  ASSIGN_OR_RETURN(connection->endpoint,
                   ucx::UcxEndpoint::Connect(worker_.get(), reply.server_worker_address()));
  // UcxEndpoint::Flush: the wireup must be over before the session is used.
  RETURN_IF_ERROR(connection->endpoint->Flush(absl::Now() + absl::Seconds(10)));
  connection->am_transport = connection->endpoint->AmTransport();
  ASSIGN_OR_RETURN(connection->arena_rkey,
                   ucx::UcxRemoteKey::Unpack(connection->endpoint->get(), reply.arena_rkey()));
  // Not mapped is the common case off this host; the endpoint serves then.
  if (absl::StatusOr<uint8_t*> mapped = connection->arena_rkey->MappedAddress(reply.arena_address());
      mapped.ok()) {
    connection->arena_mapped = *mapped;
  }
  absl::MutexLock lock(&mu_);
  connection_ = connection;
  return std::shared_ptr<const Connection>(connection);
}

void ClientDataPlane::Detach(const std::shared_ptr<const Connection>& connection) {
  absl::MutexLock lock(&mu_);
  if (connection_ == connection) connection_.reset();
}

absl::StatusOr<ClientDataPlane::RegionLease> ClientDataPlane::LeaseRegion(uint64_t bytes) {
  std::vector<std::unique_ptr<Parked>> reaped;  // destroyed outside mu_: their regions return to the pool
  {
    absl::MutexLock lock(&mu_);
    for (auto it = parked_.begin(); it != parked_.end();) {
      bool done = true;
      for (auto& receive : (*it)->receives) done = receive->done() && done;
      if (done) {
        reaped.push_back(std::move(*it));
        it = parked_.erase(it);
      } else {
        ++it;
      }
    }
  }
  reaped.clear();
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

void ClientDataPlane::ReturnRegion(std::unique_ptr<ucx::UcxMemory> memory) {
  absl::MutexLock lock(&mu_);
  if (idle_regions_.size() < kMaxIdleRegions) {
    idle_regions_.push_back(std::move(memory));
    return;
  }
  // Full: keep the larger ones.
  auto smallest = std::min_element(idle_regions_.begin(), idle_regions_.end(),
                                   [](const auto& a, const auto& b) { return a->bytes() < b->bytes(); });
  if ((*smallest)->bytes() < memory->bytes()) *smallest = std::move(memory);
}

}  // namespace kvtier::client
