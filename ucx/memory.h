// RAII owners of UCX memory registrations (ucp_mem_h) and unpacked remote
// keys (ucp_rkey_h).
//
// A UcxMemory registers an existing region (Register: the server's RAM
// arena, once) or allocates and registers a new one (Allocate: a client's
// receive region). Its packed remote key is what the peer unpacks into a
// UcxRemoteKey for one endpoint, to ucp_put_nbx into the region.
//
// Thread-safety: immutable after creation, thread-safe. REQUIRES: the
// context (and, for a remote key, the endpoint) outlives the object.
#ifndef KVTIER_UCX_MEMORY_H_
#define KVTIER_UCX_MEMORY_H_

#include <ucp/api/ucp.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "ucx/context.h"

namespace kvtier::ucx {

class UcxMemory {
 public:
  // Registers [address, address + bytes). INVALID_ARGUMENT for an empty
  // region. REQUIRES: the region outlives the registration.
  static absl::StatusOr<std::unique_ptr<UcxMemory>> Register(const UcxContext& context,
                                                             void* address, uint64_t bytes);
  // Allocates `bytes` (> 0) through UCX and registers them.
  static absl::StatusOr<std::unique_ptr<UcxMemory>> Allocate(const UcxContext& context,
                                                             uint64_t bytes);
  ~UcxMemory();
  UcxMemory(const UcxMemory&) = delete;
  UcxMemory& operator=(const UcxMemory&) = delete;

  uint8_t* address() const { return address_; }
  uint64_t bytes() const { return bytes_; }
  // The packed remote key (ucp_rkey_pack), packed once at creation.
  const std::string& packed_rkey() const { return packed_rkey_; }

 private:
  static absl::StatusOr<std::unique_ptr<UcxMemory>> Map(const UcxContext& context,
                                                        void* address, uint64_t bytes,
                                                        bool allocate);
  UcxMemory(ucp_context_h context, ucp_mem_h memh, uint8_t* address, uint64_t bytes,
            std::string packed_rkey)
      : context_(context), memh_(memh), address_(address), bytes_(bytes),
        packed_rkey_(std::move(packed_rkey)) {}

  ucp_context_h const context_;
  ucp_mem_h const memh_;
  uint8_t* const address_;
  const uint64_t bytes_;
  const std::string packed_rkey_;
};

class UcxRemoteKey {
 public:
  // Unpacks a peer's packed key for use on `ep`. INVALID_ARGUMENT when
  // `packed` is empty or malformed.
  static absl::StatusOr<std::unique_ptr<UcxRemoteKey>> Unpack(ucp_ep_h ep,
                                                              absl::string_view packed);
  ~UcxRemoteKey() { ucp_rkey_destroy(rkey_); }
  UcxRemoteKey(const UcxRemoteKey&) = delete;
  UcxRemoteKey& operator=(const UcxRemoteKey&) = delete;

  ucp_rkey_h get() const { return rkey_; }
  // This process's pointer to the peer's `remote_address` when the peer's
  // memory is mapped here (shared memory on one host: ucp_rkey_ptr), so it
  // can be read and written with plain loads and stores. UNAVAILABLE when
  // it is not mapped (other transports, or memory UCX did not allocate).
  absl::StatusOr<uint8_t*> MappedAddress(uint64_t remote_address) const;

 private:
  explicit UcxRemoteKey(ucp_rkey_h rkey) : rkey_(rkey) {}
  ucp_rkey_h const rkey_;
};

}  // namespace kvtier::ucx

#endif  // KVTIER_UCX_MEMORY_H_
