#include "common/pem_file.h"

#include <fstream>
#include <iterator>

#include "absl/strings/str_cat.h"

namespace kvtier {

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what) {
  constexpr size_t kMaxBytes = size_t{1} << 20;
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(what, ": cannot read ", path));
  std::string text;
  text.resize(kMaxBytes + 1);
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  if (in.bad()) return absl::NotFoundError(absl::StrCat(what, ": error reading ", path));
  text.resize(static_cast<size_t>(in.gcount()));
  if (text.size() > kMaxBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " is larger than 1 MiB"));
  }
  if (text.find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, ": ", path, " holds no PEM block (-----BEGIN ...)"));
  }
  return text;
}

}  // namespace kvtier
