// Caller: who a call acts for, derived from its credentials and nothing the
// request says (kvstore/access holds the table of credentials).
//
// A call authenticates with a bearer token ("authorization: Bearer <token>"
// metadata) or, without one, with the common name of its verified mTLS
// client certificate. A server without an access table has one anonymous
// tenant (tag 0) whose callers are admins: it listens on loopback only, or
// was told --allow_insecure. A call acts on its tenant's key space, or on
// the shared namespace when its metadata says "kvtier-namespace: shared"
// and its credential grants that (read for Lookup and gets, write for
// everything that changes pages or pins).
//
// Status codes: UNAUTHENTICATED (no credential, or an unknown one: the same
// answer for both), PERMISSION_DENIED (an admin RPC without the admin role,
// or a namespace the credential has no right to).
//
// Thread-safety: thread-safe; the access control (if any) must outlive it.
#ifndef KVTIER_KVSTORE_SERVICE_CALLER_H_
#define KVTIER_KVSTORE_SERVICE_CALLER_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/server_context.h"
#include "kvstore/access/access_control.h"
#include "kvtier/v1/credentials.h"

namespace kvtier::store {

struct Caller {
  // The key space the call's pages live in (PageKey::tenant).
  uint64_t tenant = 0;
  bool admin = false;
  // For errors and logs: the tenant's name ("" for the anonymous one).
  std::string name;
  // The access table that authenticated it (AccessControl::Current).
  uint64_t access_generation = 0;

  // The caller of a server without access control.
  static Caller Anonymous() { return Caller{.tenant = 0, .admin = true, .name = ""}; }
};

// What a call needs of its caller.
enum class Need {
  kRead,   // reads pages: may act on the shared namespace with read rights
  kWrite,  // stores, deletes or pins pages, or opens a data-plane session
  kAdmin,  // admin RPCs
};

class Authenticator {
 public:
  // `access` null: no access control (every caller is Caller::Anonymous()).
  explicit Authenticator(const access::AccessControl* access) : access_(access) {}

  absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& context, Need need) const;
  // Whether the access table that authenticated `caller` is still the
  // current one (always, without access control). A grant that outlives
  // its call (a data-plane session, a lane ticket, an event stream) is
  // registered only while this holds: a reload first installs its table,
  // then closes what was registered (KvStoreService::CloseGrantedChannels),
  // so no grant of the old table escapes both.
  bool IsCurrent(const Caller& caller) const;

  // The metadata keys and the namespace value clients send.
  // (kvtier/v1/credentials.h: the same for clients.)
  static constexpr const char* kTokenMetadata = wire::kTokenMetadata;
  static constexpr const char* kNamespaceMetadata = wire::kNamespaceMetadata;
  static constexpr const char* kSharedNamespace = wire::kSharedNamespace;

 private:
  const access::AccessControl* const access_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_CALLER_H_
