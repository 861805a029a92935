#include "kvstore/service/caller.h"

#include <optional>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/auth_context.h"

namespace kvtier::store {
namespace {

constexpr std::string_view kBearer = wire::kBearerPrefix;

std::optional<std::string_view> Metadata(const grpc::ServerContextBase& context,
                                         std::string_view key) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(grpc::string_ref(key.data(), key.size()));
  if (it == metadata.end()) return std::nullopt;
  return std::string_view(it->second.data(), it->second.size());
}

// The verified client certificate's common name, if the call came over
// mTLS (gRPC sets the peer identity only once the chain is verified).
std::optional<std::string> CertificateName(const grpc::ServerContextBase& context) {
  const std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth == nullptr || !auth->IsPeerAuthenticated()) return std::nullopt;
  const std::vector<grpc::string_ref> names = auth->FindPropertyValues("x509_common_name");
  if (names.size() != 1) return std::nullopt;
  return std::string(names[0].data(), names[0].size());
}

}  // namespace

absl::StatusOr<Caller> Authenticator::Authenticate(const grpc::ServerContextBase& context,
                                                   Need need) const {
  const std::optional<std::string_view> space = Metadata(context, kNamespaceMetadata);
  if (access_ == nullptr) {
    if (space.has_value()) {
      return absl::PermissionDeniedError(
          "this server has no access control, hence no shared namespace");
    }
    return Caller::Anonymous();
  }
  uint64_t generation = 0;
  const std::shared_ptr<const access::AccessTable> table = access_->Current(&generation);
  std::optional<access::Identity> identity;
  if (const std::optional<std::string_view> token = Metadata(context, kTokenMetadata)) {
    if (token->substr(0, kBearer.size()) != kBearer) {
      return absl::UnauthenticatedError("authorization metadata: expected \"Bearer <token>\"");
    }
    identity = table->FindToken(token->substr(kBearer.size()));
  } else if (const std::optional<std::string> name = CertificateName(context)) {
    identity = table->FindCertificate(*name);
  } else {
    return absl::UnauthenticatedError(
        "no credentials: send a bearer token (authorization metadata) or a client "
        "certificate the server's access file names");
  }
  if (!identity.has_value()) {
    return absl::UnauthenticatedError("unknown credentials");
  }
  if (identity->role == access::Role::kMetrics) {
    return absl::PermissionDeniedError(absl::StrCat(
        "tenant ", identity->tenant, ": a metrics credential calls no RPC (it reads /metrics)"));
  }
  Caller caller{.tenant = identity->tenant_tag,
                .admin = identity->role == access::Role::kAdmin,
                .name = identity->tenant,
                .access_generation = generation};
  if (need == Need::kAdmin && !caller.admin) {
    return absl::PermissionDeniedError(
        absl::StrCat("tenant ", caller.name, ": this RPC needs the admin role"));
  }
  if (space.has_value()) {
    if (*space != kSharedNamespace) {
      return absl::InvalidArgumentError(
          absl::StrCat(kNamespaceMetadata, " metadata: the only namespace is \"",
                       kSharedNamespace, "\""));
    }
    const bool allowed =
        identity->shared == access::SharedAccess::kWrite ||
        (need == Need::kRead && identity->shared == access::SharedAccess::kRead);
    if (!allowed) {
      return absl::PermissionDeniedError(absl::StrCat(
          "tenant ", caller.name, " may not ", need == Need::kRead ? "read" : "write",
          " the shared namespace"));
    }
    caller.tenant = access::kSharedTag;
  }
  return caller;
}

bool Authenticator::IsCurrent(const Caller& caller) const {
  return access_ == nullptr || access_->IsCurrent(caller.access_generation);
}

}  // namespace kvtier::store
