// kvtier-server's configuration: fuzzed text through the text-format parser
// and the resolver that applies defaults and validates every field.
#include <cstddef>
#include <cstdint>
#include <string>

#include "kvstore/service/server_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<kvtier::v1::ServerConfig> config =
      kvtier::store::ParseServerConfigText(text, "fuzz");
  if (!config.ok()) return 0;
  absl::StatusOr<kvtier::store::ServerSettings> settings =
      kvtier::store::ResolveServerConfig(*config);
  // A resolved configuration is one the store accepts.
  if (settings.ok() && !settings->store.Validate().ok()) __builtin_trap();
  return 0;
}
