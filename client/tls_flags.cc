#include "client/tls_flags.h"

#include <string>

#include "absl/flags/flag.h"

ABSL_FLAG(bool, tls, false, "Connect with TLS (the server has tls_cert_file)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "TLS: CAs (PEM) that sign the server's certificate; empty: the system's");
ABSL_FLAG(std::string, tls_cert_file, "", "mTLS: this client's certificate chain (PEM)");
ABSL_FLAG(std::string, tls_key_file, "", "mTLS: this client's private key (PEM)");
ABSL_FLAG(std::string, tls_server_name, "",
          "TLS: the name the server's certificate carries, when the target's host is not it");

namespace kvtier::client {

void ApplyTlsFlags(ClientOptions* options) {
  options->tls = absl::GetFlag(FLAGS_tls);
  options->tls_ca_file = absl::GetFlag(FLAGS_tls_ca_file);
  options->tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  options->tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  options->tls_server_name = absl::GetFlag(FLAGS_tls_server_name);
}

}  // namespace kvtier::client
