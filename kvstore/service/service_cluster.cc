// KvStoreService's cluster RPCs: Members (the member view as this node
// holds it), ReplicaPut (pages another node copies here),
// WatchCacheEvents (the pages this node stores and removes, for routers)
// and Drain (an operator's hand-off before a node is stopped).
#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "kvstore/service/service.h"

namespace kvtier::store {

void KvStoreService::SetMembership(const cluster::Membership* membership) {
  membership_.store(membership, std::memory_order_release);
}

absl::Status KvStoreService::DoMembers(v1::MembersResponse* response) const {
  const cluster::Membership* membership = membership_.load(std::memory_order_acquire);
  if (membership == nullptr) return absl::UnavailableError("membership not started yet");
  const std::shared_ptr<const cluster::MemberView> view = membership->View();
  response->set_revision(view->revision);
  response->set_self_id(membership->self_id());
  for (const v1::Member& member : view->members) *response->add_members() = member;
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KvStoreService::Members(grpc::CallbackServerContext* context,
                                                  const v1::MembersRequest* /*request*/,
                                                  v1::MembersResponse* response) {
  return Respond(context, [&]() -> absl::Status {
    RETURN_IF_ERROR(authenticator_.Authenticate(*context, Need::kRead).status());
    return DoMembers(response);
  });
}

absl::Status KvStoreService::DoReplicaPut(const v1::ReplicaPutRequest& request,
                                          v1::ReplicaPutResponse* response,
                                          InflightBytes::Grant* held) {
  const int n = request.pages_size();
  if (request.pin_expiry_unix_ms_size() != 0 && request.pin_expiry_unix_ms_size() != n) {
    return absl::InvalidArgumentError(
        absl::StrFormat("pin_expiry_unix_ms: %d entries for %d pages",
                        request.pin_expiry_unix_ms_size(), n));
  }
  for (int64_t expiry_ms : request.pin_expiry_unix_ms()) {
    if (expiry_ms < 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("pin_expiry_unix_ms: %d is negative", expiry_ms));
    }
  }
  // The pages are the named tenant's: the caller is an admin node.
  const Caller owner{.tenant = request.tenant(), .admin = false, .name = "replica"};
  std::vector<PutSpec> specs;
  RETURN_IF_ERROR(SpecsFromProto(owner, request.pages(), /*inline_bytes=*/true, &specs));
  uint64_t bytes = 0;
  std::vector<absl::Span<const uint8_t>> data;
  data.reserve(specs.size());
  for (const v1::PutPage& page : request.pages()) {
    bytes += page.inline_data().size();
    data.emplace_back(reinterpret_cast<const uint8_t*>(page.inline_data().data()),
                      page.inline_data().size());
  }
  ASSIGN_OR_RETURN(InflightBytes::Grant grant, inflight_.Acquire(bytes, "ReplicaPut"));
  if (held != nullptr) *held = std::move(grant);
  ASSIGN_OR_RETURN(std::vector<PutResult> results, store_->BatchPut(specs, data));
  if (results.size() != specs.size()) {
    return absl::InternalError(absl::StrFormat("store returned %d results for %d pages",
                                               results.size(), specs.size()));
  }
  counters_.AddPut(BytePath::kReplica, bytes);
  uint32_t present = 0;
  for (const PutResult& r : results) present += r.already_present;
  response->set_stored_pages(static_cast<uint32_t>(results.size()) - present);
  response->set_present_pages(present);

  // One pin for the pages pinned at the sender, until the latest expiry.
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  int64_t until_ms = 0;
  std::vector<PageKey> pinned;
  for (int i = 0; i < request.pin_expiry_unix_ms_size(); ++i) {
    if (request.pin_expiry_unix_ms(i) <= now_ms) continue;
    until_ms = std::max(until_ms, request.pin_expiry_unix_ms(i));
    pinned.push_back(specs[i].key);
  }
  if (pinned.empty()) return absl::OkStatus();
  const uint64_t ttl_ms =
      std::min<uint64_t>(static_cast<uint64_t>(until_ms - now_ms), limits_.max_pin_ttl_ms);
  RETURN_IF_ERROR(store_->Pin(owner.tenant, pinned, ttl_ms, PinId{}).status());
  response->set_pinned_pages(static_cast<uint32_t>(pinned.size()));
  return absl::OkStatus();
}

grpc::ServerUnaryReactor* KvStoreService::ReplicaPut(grpc::CallbackServerContext* context,
                                                     const v1::ReplicaPutRequest* request,
                                                     v1::ReplicaPutResponse* response) {
  absl::StatusOr<Caller> caller = authenticator_.Authenticate(*context, Need::kAdmin);
  if (!caller.ok()) return Respond(context, [&] { return caller.status(); });
  return RespondHolding(
      [&](InflightBytes::Grant* held) { return DoReplicaPut(*request, response, held); });
}

void KvStoreService::StartCacheEvents(CacheEventLog* log, const CacheEventFeedOptions& options) {
  feed_ = std::make_unique<CacheEventFeed>(log, store_, options);
}

void KvStoreService::StopCacheEvents() {
  if (feed_ != nullptr) feed_->Stop();
}

void KvStoreService::CloseGrantedChannels() {
  if (lanes_ != nullptr) lanes_->CloseAll();
  size_t sessions = 0;
  if (data_plane_ != nullptr) sessions = data_plane_->CloseAll();
  if (feed_ != nullptr) feed_->EndStreams("the access file was reloaded; watch again");
  KVTIER_LOG(INFO) << "closed what the old access table granted: data_plane_sessions="
                   << sessions << " event_streams=" << (feed_ != nullptr ? "ended" : "none");
}

grpc::ServerWriteReactor<v1::CacheEventBatch>* KvStoreService::WatchCacheEvents(
    grpc::CallbackServerContext* context, const v1::WatchCacheEventsRequest* request) {
  absl::StatusOr<Caller> caller = authenticator_.Authenticate(*context, Need::kRead);
  absl::Status refused = caller.status();
  if (refused.ok() && feed_ == nullptr) {
    refused = absl::FailedPreconditionError("this node keeps no cache event log");
  }
  if (!refused.ok()) return CacheEventFeed::Refuse(refused);
  return feed_->Watch(context, caller->tenant, *request,
                      [&] { return authenticator_.IsCurrent(*caller); });
}

absl::Status KvStoreService::DoDrain(const v1::DrainRequest& request,
                                     v1::DrainResponse* response) {
  if (request.wait_s() > 3600) {
    return absl::InvalidArgumentError(
        absl::StrFormat("wait_s %d exceeds 3600", request.wait_s()));
  }
  std::shared_ptr<const DrainHandler> drain;
  {
    absl::MutexLock lock(&drain_mu_);
    drain = drain_;
  }
  if (drain == nullptr) return absl::FailedPreconditionError("this node is not in a cluster");
  return (*drain)(absl::Seconds(request.wait_s()), response);
}

void KvStoreService::SetDrainHandler(DrainHandler handler) {
  auto shared = std::make_shared<const DrainHandler>(std::move(handler));
  absl::MutexLock lock(&drain_mu_);
  drain_ = std::move(shared);
}

grpc::ServerUnaryReactor* KvStoreService::Drain(grpc::CallbackServerContext* context,
                                                const v1::DrainRequest* request,
                                                v1::DrainResponse* response) {
  absl::StatusOr<Caller> caller = authenticator_.Authenticate(*context, Need::kAdmin);
  if (!caller.ok()) return Respond(context, [&] { return caller.status(); });
  return RespondAfterWaiting(
      [this, request, response](InflightBytes::Grant*) { return DoDrain(*request, response); });
}

}  // namespace kvtier::store
