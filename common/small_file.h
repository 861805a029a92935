// ReadSmallFile: the whole of a small file that configures something (an
// access file, a server config, a token, a certificate, a budget profile),
// read so that a hostile or mistaken path is a clear error: a FIFO is not
// waited on, a directory or device is not read as empty or endless text,
// and nothing past the bound is held in memory.
#ifndef KVTIER_COMMON_SMALL_FILE_H_
#define KVTIER_COMMON_SMALL_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvtier {

// The file's bytes. The open's error as absl::ErrnoToStatus gives it
// (NOT_FOUND when absent); FAILED_PRECONDITION when it is not a regular
// file (opened without blocking, so a FIFO returns at once);
// INVALID_ARGUMENT when it holds more than `max_bytes`. `what` names the
// file in errors ("access file").
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, size_t max_bytes,
                                          absl::string_view what);

}  // namespace kvtier

#endif  // KVTIER_COMMON_SMALL_FILE_H_
