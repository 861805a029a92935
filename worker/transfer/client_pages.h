// The conversions the stores over client/ share (client_page_store.h,
// cluster_page_store.h): worker pages to the client's puts, the client's
// got pages to fetched pages.
#ifndef KVTIER_WORKER_TRANSFER_CLIENT_PAGES_H_
#define KVTIER_WORKER_TRANSFER_CLIENT_PAGES_H_

#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "client/store_client.h"
#include "worker/transfer/page_store.h"

namespace kvtier::worker {

// The client's view of `pages` (spans into their bytes). DATA_LOSS when a
// page's bytes no longer match the checksum taken when it was filled.
absl::StatusOr<std::vector<client::PutPage>> ToPutPages(absl::Span<const StoredPage> pages);

// One fetched page per key from the client's answer (its bytes moved out).
// INTERNAL when the answer is not one page per key.
absl::StatusOr<std::vector<FetchedPage>> ToFetchedPages(absl::Span<const PageKey> keys,
                                                        std::vector<client::GotPage> got);

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_TRANSFER_CLIENT_PAGES_H_
