// How a call names its caller, beside store.proto: the gRPC metadata that
// carries a bearer token and picks the shared namespace, and what a token
// may be. Servers (kvstore/access, kvstore/service/caller.h) and clients
// (client/store_client.cc) both use these, so that a token a client
// accepts is one the server accepts.
#ifndef KVTIER_PROTO_KVTIER_V1_CREDENTIALS_H_
#define KVTIER_PROTO_KVTIER_V1_CREDENTIALS_H_

#include <cstddef>
#include <string_view>

namespace kvtier::wire {

// "authorization: Bearer <token>".
inline constexpr char kTokenMetadata[] = "authorization";
inline constexpr std::string_view kBearerPrefix = "Bearer ";
// "kvtier-namespace: shared" acts on the shared namespace.
inline constexpr char kNamespaceMetadata[] = "kvtier-namespace";
inline constexpr char kSharedNamespace[] = "shared";

// A token: 16..4096 bytes of printable ASCII without the space
// (0x21..0x7e).
inline constexpr size_t kMinTokenBytes = 16;
inline constexpr size_t kMaxTokenBytes = 4096;
constexpr bool IsTokenByte(char c) { return c >= 0x21 && c <= 0x7e; }

}  // namespace kvtier::wire

#endif  // KVTIER_PROTO_KVTIER_V1_CREDENTIALS_H_
