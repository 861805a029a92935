// ClientPageStore: the PageStoreBackend over the store's client library
// (client/store_client.h), for workers that talk to a real kvtier store.
//
// The client's own retries and per-RPC deadlines apply inside each call;
// the transfer queue's deadline bounds the whole call from the worker's
// side. gRPC statuses already arrive as absl::Status from the client; this
// adapter maps the per-page status enum, and tells the client the size of
// the pages it last put or got (a worker's pages share one layout), so
// that gets can land in each page's buffer directly (ClientOptions
// local_direct_transfers).
//
// Thread-safety: thread-safe (the client is).
#ifndef KVTIER_WORKER_TRANSFER_CLIENT_PAGE_STORE_H_
#define KVTIER_WORKER_TRANSFER_CLIENT_PAGE_STORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "client/store_client.h"
#include "worker/transfer/page_store.h"

namespace kvtier::worker {

class ClientPageStore : public PageStoreBackend {
 public:
  // A store over a client of its own, connected to `target` (host:port)
  // with `options`; the client's errors (INVALID_ARGUMENT for bad options).
  static absl::StatusOr<std::unique_ptr<ClientPageStore>> Connect(
      const std::string& target, const client::ClientOptions& options = {});
  // `client` must outlive this object.
  explicit ClientPageStore(client::StoreClient* client) : client_(client) {}

  absl::Status Put(absl::Span<const StoredPage> pages) override;
  absl::StatusOr<std::vector<FetchedPage>> Get(absl::Span<const PageKey> keys) override;
  // Pages copied out of shared memory (a local lane's segment, a mapped
  // arena) go straight into their destinations; inline ones are landed
  // after.
  absl::StatusOr<std::vector<FetchedPage>> GetInto(
      absl::Span<const PageKey> keys, absl::Span<const PageDestination> destinations) override;
  absl::StatusOr<std::string> Pin(absl::Span<const PageKey> keys, uint64_t ttl_ms,
                                  std::string_view pin_id) override;
  absl::Status Unpin(std::string_view pin_id) override;
  // One Lookup RPC over layers [0, n_layers).
  absl::StatusOr<uint32_t> LookupPrefix(absl::Span<const Hash128> chain,
                                        uint32_t n_layers) override;

 private:
  std::unique_ptr<client::StoreClient> owned_;  // set by Connect
  client::StoreClient* const client_;
  // BatchGet's page_bytes_hint: the size of the pages last seen, 0 at first.
  std::atomic<uint64_t> page_bytes_{0};
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_TRANSFER_CLIENT_PAGE_STORE_H_
