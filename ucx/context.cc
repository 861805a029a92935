#include "ucx/context.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "ucx/status.h"

namespace kvtier::ucx {
namespace {

struct ConfigRelease {
  void operator()(ucp_config_t* config) const { ucp_config_release(config); }
};
using ConfigPtr = std::unique_ptr<ucp_config_t, ConfigRelease>;

// UCX's configuration from the environment, with `options` for the settings
// the environment leaves unset.
absl::StatusOr<ConfigPtr> ReadConfig(const UcxOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  ucp_config_t* raw = nullptr;
  RETURN_IF_ERROR(FromUcsStatus(ucp_config_read(nullptr, nullptr, &raw), "ucp_config_read"));
  ConfigPtr config(raw);
  struct Setting {
    const char* name;  // without the UCX_ prefix
    std::string value;
  };
  const Setting settings[] = {
      {"TLS", options.transports},
      {"USE_MT_MUTEX", options.mutex_locks ? "y" : "n"},
  };
  for (const Setting& setting : settings) {
    if (std::getenv(absl::StrCat("UCX_", setting.name).c_str()) != nullptr) continue;
    RETURN_IF_ERROR(
        FromUcsStatus(ucp_config_modify(config.get(), setting.name, setting.value.c_str()),
                      absl::StrCat("ucp_config_modify(", setting.name, ")")));
  }
  if (!options.shared_memory) {
    // Whatever the environment says: no intra-node device at all.
    RETURN_IF_ERROR(FromUcsStatus(ucp_config_modify(config.get(), "SHM_DEVICES", ""),
                                  "ucp_config_modify(SHM_DEVICES)"));
  }
  return config;
}

}  // namespace

absl::Status UcxOptions::Validate() const {
  if (transports.empty()) return absl::InvalidArgumentError("UCX transports must not be empty");
  for (const char c : transports) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == ',' || c == '^' || c == '_' || c == '-' || c == ':';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrCat("UCX transports \"", transports, "\": unexpected character"));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> UcxContext::DescribeConfig(const UcxOptions& options) {
  ASSIGN_OR_RETURN(ConfigPtr config, ReadConfig(options));
  char* text = nullptr;
  size_t length = 0;
  FILE* stream = open_memstream(&text, &length);
  if (stream == nullptr) return absl::InternalError("open_memstream failed");
  ucp_config_print(config.get(), stream, nullptr, UCS_CONFIG_PRINT_CONFIG);
  std::fclose(stream);
  std::string described(text, length);
  std::free(text);
  return described;
}

absl::StatusOr<std::unique_ptr<UcxContext>> UcxContext::Create(const UcxOptions& options) {
  ASSIGN_OR_RETURN(ConfigPtr config, ReadConfig(options));
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_TAG | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 1;
  ucp_context_h context = nullptr;
  RETURN_IF_ERROR(FromUcsStatus(ucp_init(&params, config.get(), &context), "ucp_init"));
  return std::unique_ptr<UcxContext>(new UcxContext(context));
}

UcxContext::~UcxContext() { ucp_cleanup(context_); }

}  // namespace kvtier::ucx
