#include "worker/transfer/client_pages.h"

#include "absl/strings/str_cat.h"
#include "common/checksum.h"

namespace kvtier::worker {

absl::StatusOr<std::vector<client::PutPage>> ToPutPages(absl::Span<const StoredPage> pages) {
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
  return puts;
}

absl::StatusOr<std::vector<FetchedPage>> ToFetchedPages(absl::Span<const PageKey> keys,
                                                        std::vector<client::GotPage> got) {
  if (got.size() != keys.size()) {
    return absl::InternalError(
        absl::StrCat("store answered ", got.size(), " pages for ", keys.size(), " keys"));
  }
  std::vector<FetchedPage> out(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    out[i].key = keys[i];
    switch (got[i].status) {
      case v1::PAGE_STATUS_OK:
        out[i].status = FetchStatus::kOk;
        out[i].layout = got[i].layout;
        out[i].checksum = got[i].checksum;
        out[i].bytes = std::move(got[i].data);
        out[i].in_destination = got[i].in_destination;
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

}  // namespace kvtier::worker
