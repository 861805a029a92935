// JsonQuoted: text as a JSON string literal, quotes included, for reports
// written by hand (kvtier-eval). '"', '\' and control characters are
// escaped; valid UTF-8 passes through; a byte that does not start or
// continue a valid UTF-8 sequence becomes U+FFFD, so the result is always
// valid JSON in valid UTF-8.
//
// Thread-safety: stateless.
#ifndef KVTIER_COMMON_JSON_TEXT_H_
#define KVTIER_COMMON_JSON_TEXT_H_

#include <string>

#include "absl/strings/string_view.h"

namespace kvtier {

std::string JsonQuoted(absl::string_view text);

}  // namespace kvtier

#endif  // KVTIER_COMMON_JSON_TEXT_H_
