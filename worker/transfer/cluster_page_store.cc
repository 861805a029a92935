#include "worker/transfer/cluster_page_store.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/secure_random.h"
#include "common/status_macros.h"
#include "worker/transfer/client_pages.h"

namespace kvtier::worker {
namespace {

// Ids this store hands out are 16 bytes; empty asks for a new pin.
absl::Status CheckPinId(std::string_view pin_id) {
  if (!pin_id.empty() && pin_id.size() != 16) {
    return absl::InvalidArgumentError(
        absl::StrCat("pin id of ", pin_id.size(), " bytes; ids are 16"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<ClusterPageStore>> ClusterPageStore::Connect(
    const std::vector<std::string>& seeds, const client::ClusterOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<client::ClusterClient> cluster,
                   client::ClusterClient::Connect(seeds, options));
  auto store = std::make_unique<ClusterPageStore>(cluster.get());
  store->owned_ = std::move(cluster);
  return store;
}

absl::Status ClusterPageStore::Put(absl::Span<const StoredPage> pages) {
  absl::StatusOr<std::vector<client::PutPage>> puts = ToPutPages(pages);
  if (!puts.ok()) return puts.status();
  return cluster_->BatchPut(*puts).status();
}

absl::StatusOr<std::vector<FetchedPage>> ClusterPageStore::Get(absl::Span<const PageKey> keys) {
  ASSIGN_OR_RETURN(std::vector<client::GotPage> got, cluster_->BatchGet(keys));
  return ToFetchedPages(keys, std::move(got));
}

absl::StatusOr<std::string> ClusterPageStore::Pin(absl::Span<const PageKey> keys,
                                                  uint64_t ttl_ms, std::string_view pin_id) {
  RETURN_IF_ERROR(CheckPinId(pin_id));
  const absl::Time now = absl::Now();
  std::string id(pin_id);
  {
    absl::MutexLock lock(&mu_);
    absl::erase_if(pins_, [&](const auto& entry) { return entry.second.expiry <= now; });
    if (!id.empty() && !pins_.contains(id)) {
      return absl::NotFoundError("pin is unknown or expired");
    }
  }
  ASSIGN_OR_RETURN(client::ClusterPin made, cluster_->Pin(keys, ttl_ms));
  absl::MutexLock lock(&mu_);
  if (id.empty()) {
    uint8_t bytes[16];
    SecureRandomBytes(absl::MakeSpan(bytes));
    id.assign(reinterpret_cast<const char*>(bytes), sizeof(bytes));
  }
  PinRecord& record = pins_[id];
  record.pins.push_back(std::move(made));
  record.expiry = std::max(record.expiry, now + absl::Milliseconds(static_cast<int64_t>(ttl_ms)));
  return id;
}

absl::Status ClusterPageStore::Unpin(std::string_view pin_id) {
  RETURN_IF_ERROR(CheckPinId(pin_id));
  PinRecord record;
  {
    absl::MutexLock lock(&mu_);
    auto it = pins_.find(std::string(pin_id));
    if (it == pins_.end() || it->second.expiry <= absl::Now()) {
      if (it != pins_.end()) pins_.erase(it);
      return absl::NotFoundError("pin is unknown or expired");
    }
    record = std::move(it->second);
    pins_.erase(it);
  }
  absl::Status status;
  for (const client::ClusterPin& pin : record.pins) status.Update(cluster_->Unpin(pin));
  return status;
}

absl::StatusOr<uint32_t> ClusterPageStore::LookupPrefix(absl::Span<const Hash128> chain,
                                                        uint32_t n_layers) {
  if (n_layers == 0) return absl::InvalidArgumentError("lookup of no layers");
  if (chain.empty()) return 0u;
  ASSIGN_OR_RETURN(client::ClusterLookupReply reply, cluster_->Lookup(chain, 0, n_layers));
  return std::min<uint32_t>(reply.prefix_pages, static_cast<uint32_t>(chain.size()));
}

}  // namespace kvtier::worker
