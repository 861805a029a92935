#include "common/tool_usage.h"

#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"

namespace kvtier {

bool IsToolFlagFile(absl::string_view file) { return !absl::StrContains(file, "absl/"); }

void SetToolUsage(absl::string_view usage) {
  absl::SetProgramUsageMessage(usage);
  absl::FlagsUsageConfig config;
  config.contains_help_flags = IsToolFlagFile;
  config.contains_helpshort_flags = IsToolFlagFile;
  absl::SetFlagsUsageConfig(config);
}

}  // namespace kvtier
