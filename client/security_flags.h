// The security flags every kvtier client program shares: TLS (--tls,
// --tls_ca_file, --tls_cert_file, --tls_key_file, --tls_server_name) and
// credentials (--token_file, --shared_namespace), and their transfer into
// ClientOptions (store_client.h documents each).
#ifndef KVTIER_CLIENT_SECURITY_FLAGS_H_
#define KVTIER_CLIENT_SECURITY_FLAGS_H_

#include "client/store_client.h"

namespace kvtier::client {

// Sets options->tls*, token_file and shared_namespace from the flags;
// Connect validates them.
void ApplySecurityFlags(ClientOptions* options);

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_SECURITY_FLAGS_H_
