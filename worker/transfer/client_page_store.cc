#include "worker/transfer/client_page_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "worker/transfer/client_pages.h"

namespace kvtier::worker {

absl::StatusOr<std::unique_ptr<ClientPageStore>> ClientPageStore::Connect(
    const std::string& target, const client::ClientOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<client::StoreClient> client,
                   client::StoreClient::Connect(target, options));
  auto store = std::make_unique<ClientPageStore>(client.get());
  store->owned_ = std::move(client);
  return store;
}

absl::Status ClientPageStore::Put(absl::Span<const StoredPage> pages) {
  absl::StatusOr<std::vector<client::PutPage>> puts = ToPutPages(pages);
  if (!puts.ok()) return puts.status();
  if (!pages.empty()) page_bytes_.store(pages[0].bytes.size(), std::memory_order_relaxed);
  return client_->BatchPut(*puts).status();
}

absl::StatusOr<std::vector<FetchedPage>> ClientPageStore::Get(absl::Span<const PageKey> keys) {
  return GetInto(keys, {});
}

absl::StatusOr<std::vector<FetchedPage>> ClientPageStore::GetInto(
    absl::Span<const PageKey> keys, absl::Span<const PageDestination> destinations) {
  // The client lands a page copied out of shared memory in its destination
  // only after checking the bytes it wrote there against the page's
  // checksum; pages that came inline are landed here.
  ASSIGN_OR_RETURN(std::vector<client::GotPage> got,
                   client_->BatchGet(keys, page_bytes_.load(std::memory_order_relaxed),
                                     destinations));
  for (const client::GotPage& page : got) {
    if (page.status == v1::PAGE_STATUS_OK) {
      page_bytes_.store(page.layout.PageBytes(), std::memory_order_relaxed);
      break;
    }
  }
  ASSIGN_OR_RETURN(std::vector<FetchedPage> pages, ToFetchedPages(keys, std::move(got)));
  LandPages(destinations, pages);
  return pages;
}

absl::StatusOr<std::string> ClientPageStore::Pin(absl::Span<const PageKey> keys,
                                                 uint64_t ttl_ms, std::string_view pin_id) {
  return client_->Pin(keys, ttl_ms, pin_id);
}

absl::Status ClientPageStore::Unpin(std::string_view pin_id) { return client_->Unpin(pin_id); }

absl::StatusOr<uint32_t> ClientPageStore::LookupPrefix(absl::Span<const Hash128> chain,
                                                       uint32_t n_layers) {
  if (n_layers == 0) return absl::InvalidArgumentError("lookup of no layers");
  if (chain.empty()) return 0u;
  ASSIGN_OR_RETURN(client::LookupReply reply, client_->Lookup(chain, 0, n_layers));
  // The answer is untrusted: never more pages than were asked about.
  return std::min<uint32_t>(reply.prefix_pages, static_cast<uint32_t>(chain.size()));
}

}  // namespace kvtier::worker
