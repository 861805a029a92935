#include "worker/transfer/client_page_store.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/checksum.h"
#include "common/status_macros.h"

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
  std::vector<client::PutPage> puts;
  puts.reserve(pages.size());
  for (const StoredPage& page : pages) {
    // The client recomputes the checksum from the bytes; refuse bytes that
    // already disagree with the one taken when the page was filled.
    if (PageChecksum(page.bytes.data(), page.bytes.size()) != page.checksum) {
      return absl::DataLossError(
          absl::StrCat("page ", page.key.DebugString(), " changed since it was checksummed"));
    }
    puts.push_back(client::PutPage{
        page.key, page.layout,
        absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(page.bytes.data()),
                            page.bytes.size())});
  }
  absl::StatusOr<std::vector<client::PutOutcome>> outcomes = client_->BatchPut(puts);
  return outcomes.status();
}

absl::StatusOr<std::vector<FetchedPage>> ClientPageStore::Get(absl::Span<const PageKey> keys) {
  absl::StatusOr<std::vector<client::GotPage>> got = client_->BatchGet(keys);
  if (!got.ok()) return got.status();
  if (got->size() != keys.size()) {
    return absl::InternalError(absl::StrCat("store answered ", got->size(), " pages for ",
                                            keys.size(), " keys"));
  }
  std::vector<FetchedPage> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    client::GotPage& g = (*got)[i];
    out[i].key = keys[i];
    switch (g.status) {
      case v1::PAGE_STATUS_OK:
        out[i].status = FetchStatus::kOk;
        out[i].layout = g.layout;
        out[i].checksum = g.checksum;
        out[i].bytes = std::move(g.data);
        break;
      case v1::PAGE_STATUS_LOST:
        out[i].status = FetchStatus::kLost;
        break;
      default:
        out[i].status = FetchStatus::kNotFound;
        break;
    }
  }
  return out;
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
