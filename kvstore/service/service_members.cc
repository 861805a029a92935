// KvStoreService's Members RPC: the cluster's member view as this node
// holds it.
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

}  // namespace kvtier::store
