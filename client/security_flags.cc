#include "client/security_flags.h"

#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(bool, tls, false, "Connect with TLS (the server has tls_cert_file)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "TLS: CAs (PEM) that sign the server's certificate; empty: the system's");
ABSL_FLAG(std::string, tls_cert_file, "", "mTLS: this client's certificate chain (PEM)");
ABSL_FLAG(std::string, tls_key_file, "", "mTLS: this client's private key (PEM)");
ABSL_FLAG(std::string, tls_server_name, "",
          "TLS: the name the server's certificate carries, when the target's host is not it");
ABSL_FLAG(std::string, token_file, "",
          "A file whose first line is this client's bearer token (a server with access_file)");
ABSL_FLAG(bool, shared_namespace, false,
          "Act on the shared namespace instead of this client's tenant (needs the right to)");

namespace kvtier::client {

void ApplySecurityFlags(ClientOptions* options) {
  options->tls = absl::GetFlag(FLAGS_tls);
  options->tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  options->tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options->tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options->tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
  options->token_file = absl::GetFlag(FLAGS_token_file);
  options->shared_namespace = absl::GetFlag(FLAGS_shared_namespace);
}

}  // namespace kvtier::client
