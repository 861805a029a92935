// Tenants as the server bounds and reports them: the quotas an access
// table gives each tenant over the server's defaults, and the name Stats
// shows for a tenant tag.
//
//   ApplyTenantQuotas(*access->Current(), settings.store, store);  // at start, on SIGHUP
//
// Thread-safety: pure functions (ApplyTenantQuotas calls the thread-safe
// Store).
#ifndef KVTIER_KVSTORE_SERVICE_TENANTS_H_
#define KVTIER_KVSTORE_SERVICE_TENANTS_H_

#include <cstdint>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "kvstore/access/access_table.h"
#include "kvstore/core/store.h"

namespace kvtier::store {

// Each tenant the table gives quotas of its own: those keys from the
// table, the rest from `defaults` (StoreOptions::DefaultTenantQuotas).
absl::flat_hash_map<uint64_t, TenantQuotas> TenantQuotasOf(const access::AccessTable& table,
                                                           const TenantQuotas& defaults);

// Store::SetTenantQuotas(TenantQuotasOf(table, options' defaults)).
void ApplyTenantQuotas(const access::AccessTable& table, const StoreOptions& options,
                       Store* store);

// "anonymous" (kAnonymousTag), "shared" (kSharedTag), the tenant's name
// when `table` (may be null) names the tag, else "tag:" and 16 hex digits.
std::string TenantLabel(const access::AccessTable* table, uint64_t tag);

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_TENANTS_H_
