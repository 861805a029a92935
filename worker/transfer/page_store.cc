#include "worker/transfer/page_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/status_macros.h"

namespace kvtier::worker {

const char* FetchStatusName(FetchStatus status) {
  switch (status) {
    case FetchStatus::kOk: return "ok";
    case FetchStatus::kNotFound: return "not_found";
    case FetchStatus::kLost: return "lost";
  }
  return "unknown";
}

absl::StatusOr<std::vector<FetchedPage>> PageStoreBackend::GetInto(
    absl::Span<const PageKey> keys, absl::Span<const PageDestination> destinations) {
  if (!destinations.empty() && destinations.size() != keys.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("get of ", keys.size(), " pages into ", destinations.size(), " places"));
  }
  ASSIGN_OR_RETURN(std::vector<FetchedPage> pages, Get(keys));
  LandPages(destinations, pages);
  return pages;
}

void PageStoreBackend::LandPages(absl::Span<const PageDestination> destinations,
                                 std::vector<FetchedPage>& pages) {
  for (size_t i = 0; i < destinations.size() && i < pages.size(); ++i) {
    FetchedPage& page = pages[i];
    if (page.status != FetchStatus::kOk || page.in_destination ||
        page.bytes.size() != destinations[i].bytes()) {
      continue;
    }
    // A page that does not hash to its checksum stays in `bytes`, where the
    // caller's own check rejects it.
    if (ScatterAndHashCopy(destinations[i].pieces, page.bytes.data(), page.bytes.size()) !=
        page.checksum) {
      continue;
    }
    page.bytes = {};
    page.in_destination = true;
  }
}

}  // namespace kvtier::worker
