// ReadPemFile: a certificate chain, private key or CA bundle for TLS, read
// and checked before gRPC sees it, so that a bad path or file is a clear
// error at start rather than a failed handshake later.
#ifndef KVTIER_COMMON_PEM_FILE_H_
#define KVTIER_COMMON_PEM_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier {

// The file's bytes. NOT_FOUND when it cannot be read; INVALID_ARGUMENT when
// it is empty, larger than 1 MiB or holds no PEM block ("-----BEGIN ").
// `what` names the file in errors ("tls_cert_file").
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what);

}  // namespace kvtier

#endif  // KVTIER_COMMON_PEM_FILE_H_
