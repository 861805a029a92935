#include "kvstore/service/tenants.h"

#include <optional>
#include <string_view>

#include "absl/strings/str_format.h"

namespace kvtier::store {

absl::flat_hash_map<uint64_t, TenantQuotas> TenantQuotasOf(const access::AccessTable& table,
                                                           const TenantQuotas& defaults) {
  absl::flat_hash_map<uint64_t, TenantQuotas> out;
  for (const auto& [tag, own] : table.quota_overrides()) {
    TenantQuotas& quotas = out[tag];
    quotas.max_ram_bytes = own.max_ram_bytes.value_or(defaults.max_ram_bytes);
    quotas.max_disk_bytes = own.max_disk_bytes.value_or(defaults.max_disk_bytes);
    quotas.max_pins = own.max_pins.value_or(defaults.max_pins);
    quotas.max_pinned_bytes = own.max_pinned_bytes.value_or(defaults.max_pinned_bytes);
  }
  return out;
}

void ApplyTenantQuotas(const access::AccessTable& table, const StoreOptions& options,
                       Store* store) {
  store->SetTenantQuotas(TenantQuotasOf(table, options.DefaultTenantQuotas()));
}

std::string TenantLabel(const access::AccessTable* table, uint64_t tag) {
  if (tag == access::kAnonymousTag) return "anonymous";
  if (tag == access::kSharedTag) return "shared";
  if (table != nullptr) {
    if (std::optional<std::string_view> name = table->TenantName(tag)) return std::string(*name);
  }
  return absl::StrFormat("tag:%016x", tag);
}

}  // namespace kvtier::store
