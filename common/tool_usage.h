// SetToolUsage: what `--help` prints for kvtier's programs that parse their
// flags with absl::ParseCommandLine.
//
// abseil's --help lists only flags defined in a file named after the
// program (kvtier-eval.cc, kvtier-eval_main.cc, ...), which none of ours
// is, so it printed "No flags matched". This makes --help list the flags
// kvtier's own code defines (every file outside abseil), under `usage`;
// --helpfull still lists abseil's as well.
//
// Call once at the top of main, before absl::ParseCommandLine.
#ifndef KVTIER_COMMON_TOOL_USAGE_H_
#define KVTIER_COMMON_TOOL_USAGE_H_

#include "absl/strings/string_view.h"

namespace kvtier {

void SetToolUsage(absl::string_view usage);

// Whether --help lists the flags defined in `file` (a path as the flag
// registry records it): false only for abseil's own.
bool IsToolFlagFile(absl::string_view file);

}  // namespace kvtier

#endif  // KVTIER_COMMON_TOOL_USAGE_H_
