// kvtier-server's command-line flags: each sets the config field of its
// name (proto/kvtier/v1/config.proto), over the file --config names.
#ifndef KVTIER_KVSTORE_SERVICE_SERVER_FLAGS_H_
#define KVTIER_KVSTORE_SERVICE_SERVER_FLAGS_H_

#include <string>

#include "absl/flags/declare.h"
#include "absl/status/statusor.h"
#include "kvstore/service/server_config.h"

ABSL_DECLARE_FLAG(std::string, port_file);

namespace kvtier::store {

// Notes which flags argv gives, so that only those override the config
// file. Call before absl::ParseCommandLine.
void RecordGivenFlags(int argc, char** argv);

// The config file (--config), the given flags over it, resolved.
absl::StatusOr<ServerSettings> LoadSettings();

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_SERVER_FLAGS_H_
