#include "common/pem_file.h"

#include "absl/strings/str_cat.h"
#include "common/small_file.h"
#include "common/status_macros.h"

namespace kvtier {

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what) {
  constexpr size_t kMaxBytes = size_t{1} << 20;
  ASSIGN_OR_RETURN(std::string text, ReadSmallFile(path, kMaxBytes, what));
  if (text.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", path, " holds no PEM block (-----BEGIN ...)"));
  }
  return text;
}

}  // namespace kvtier
