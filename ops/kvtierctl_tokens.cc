// kvtierctl's credential commands, which reach no server: new-token and
// hash-token.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/secure_random.h"
#include "common/status_macros.h"
#include "kvstore/access/access_table.h"
#include "ops/kvtierctl.h"

ABSL_FLAG(std::string, role, "tenant",
          "new-token: tenant, admin, or metrics (a token for /metrics alone)");
ABSL_FLAG(std::string, shared, "none",
          "new-token: rights on the shared namespace: none, read, write");

namespace kvtier::ops {

// new-token TENANT OUT: a fresh random token (256 bits, hex) written to OUT,
// readable by its owner only, and the access-file line that admits it,
// which holds only its hash.
absl::Status NewToken(const std::string& tenant, const std::string& out_path) {
  RETURN_IF_ERROR(access::ValidateTenantName(tenant));
  const std::string role = absl::GetFlag(FLAGS_role);
  const std::string shared = absl::GetFlag(FLAGS_shared);
  if (role != "tenant" && role != "admin" && role != "metrics") {
    return absl::InvalidArgumentError(
        absl::StrCat("--role: \"", role, "\" is not tenant, admin or metrics"));
  }
  if (shared != "none" && shared != "read" && shared != "write") {
    return absl::InvalidArgumentError(
        absl::StrCat("--shared: \"", shared, "\" is not none, read or write"));
  }
  if (role == "metrics" && shared != "none") {
    return absl::InvalidArgumentError("--shared: a metrics token holds no pages");
  }
  uint8_t bytes[32];
  SecureRandomBytes(absl::MakeSpan(bytes));
  const std::string token =
      absl::BytesToHexString(std::string(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
  // O_EXCL: an existing token file is never overwritten.
  const int fd = open(out_path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot create ", out_path, ": ", std::strerror(errno)));
  }
  const std::string line = token + "\n";
  const bool written = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  if (close(fd) != 0 || !written) {
    return absl::UnavailableError(absl::StrCat("cannot write ", out_path));
  }
  std::printf("tenant=%s role=%s token_sha256=%s shared=%s\n", tenant.c_str(), role.c_str(),
              access::HashToken(token).c_str(), shared.c_str());
  return absl::OkStatus();
}

// hash-token: the access-file hash of the token on standard input.
absl::Status HashTokenFromStdin() {
  std::string token;
  std::getline(std::cin, token);
  if (!token.empty() && token.back() == '\r') token.pop_back();
  RETURN_IF_ERROR(access::ValidateToken(token));
  std::printf("%s\n", access::HashToken(token).c_str());
  return absl::OkStatus();
}

}  // namespace kvtier::ops
