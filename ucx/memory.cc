#include "ucx/memory.h"

#include "common/status_macros.h"
#include "ucx/status.h"

namespace kvtier::ucx {

absl::StatusOr<std::unique_ptr<UcxMemory>> UcxMemory::Register(const UcxContext& context,
                                                               void* address, uint64_t bytes) {
  if (address == nullptr || bytes == 0) {
    return absl::InvalidArgumentError("UcxMemory::Register: empty region");
  }
  return Map(context, address, bytes, /*allocate=*/false);
}

absl::StatusOr<std::unique_ptr<UcxMemory>> UcxMemory::Allocate(const UcxContext& context,
                                                               uint64_t bytes) {
  if (bytes == 0) return absl::InvalidArgumentError("UcxMemory::Allocate: 0 bytes");
  return Map(context, nullptr, bytes, /*allocate=*/true);
}

absl::StatusOr<std::unique_ptr<UcxMemory>> UcxMemory::Map(const UcxContext& context,
                                                          void* address, uint64_t bytes,
                                                          bool allocate) {
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS;
  params.address = address;
  params.length = bytes;
  params.flags = allocate ? UCP_MEM_MAP_ALLOCATE : 0;
  ucp_mem_h memh = nullptr;
  RETURN_IF_ERROR(FromUcsStatus(ucp_mem_map(context.get(), &params, &memh), "ucp_mem_map"));
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  ucs_status_t status = ucp_mem_query(memh, &attr);
  void* packed = nullptr;
  size_t packed_size = 0;
  if (status == UCS_OK) status = ucp_rkey_pack(context.get(), memh, &packed, &packed_size);
  if (status != UCS_OK) {
    ucp_mem_unmap(context.get(), memh);
    return FromUcsStatus(status, "ucp_rkey_pack");
  }
  std::string rkey(static_cast<const char*>(packed), packed_size);
  ucp_rkey_buffer_release(packed);
  return std::unique_ptr<UcxMemory>(new UcxMemory(
      context.get(), memh, static_cast<uint8_t*>(attr.address), bytes, std::move(rkey)));
}

UcxMemory::~UcxMemory() { ucp_mem_unmap(context_, memh_); }

absl::StatusOr<std::unique_ptr<UcxRemoteKey>> UcxRemoteKey::Unpack(ucp_ep_h ep,
                                                                   absl::string_view packed) {
  if (packed.empty()) return absl::InvalidArgumentError("remote key: empty");
  ucp_rkey_h rkey = nullptr;
  RETURN_IF_ERROR(
      FromUcsStatus(ucp_ep_rkey_unpack(ep, packed.data(), &rkey), "ucp_ep_rkey_unpack"));
  return std::unique_ptr<UcxRemoteKey>(new UcxRemoteKey(rkey));
}

absl::StatusOr<uint8_t*> UcxRemoteKey::MappedAddress(uint64_t remote_address) const {
  void* local = nullptr;
  RETURN_IF_ERROR(FromUcsStatus(ucp_rkey_ptr(rkey_, remote_address, &local), "ucp_rkey_ptr"));
  return static_cast<uint8_t*>(local);
}

}  // namespace kvtier::ucx
