// The TLS command-line flags every kvtier client program shares (--tls,
// --tls_ca_file, --tls_cert_file, --tls_key_file, --tls_server_name), and
// their transfer into ClientOptions (store_client.h documents each).
#ifndef KVTIER_CLIENT_TLS_FLAGS_H_
#define KVTIER_CLIENT_TLS_FLAGS_H_

#include "client/store_client.h"

namespace kvtier::client {

// Sets options->tls* from the flags; Connect validates them.
void ApplyTlsFlags(ClientOptions* options);

}  // namespace kvtier::client

#endif  // KVTIER_CLIENT_TLS_FLAGS_H_
