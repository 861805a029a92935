// TieredStore: tenants' bytes in each tier, their quotas, and their stats.
#include <algorithm>
#include <cassert>
#include <string>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "kvstore/core/tiered_store.h"

namespace kvtier::store {

void TieredStore::SetTenantQuotas(absl::flat_hash_map<uint64_t, TenantQuotas> quotas) {
  absl::MutexLock lock(&mu_);
  tenant_quotas_ = std::move(quotas);
}

TenantQuotas TieredStore::QuotasOfLocked(uint64_t tenant) const {
  auto it = tenant_quotas_.find(tenant);
  return it == tenant_quotas_.end() ? default_quotas_ : it->second;
}

TieredStore::TenantBytes TieredStore::BytesOfTenantLocked(uint64_t tenant) const {
  auto it = tenant_bytes_.find(tenant);
  return it == tenant_bytes_.end() ? TenantBytes() : it->second;
}

void TieredStore::ChargeRamLocked(uint64_t tenant, uint64_t bytes) {
  if (bytes > 0) tenant_bytes_[tenant].ram += bytes;
}

void TieredStore::CreditRamLocked(uint64_t tenant, uint64_t bytes) {
  auto it = tenant_bytes_.find(tenant);
  assert(it != tenant_bytes_.end() && it->second.ram >= bytes);
  if (it == tenant_bytes_.end()) return;
  it->second.ram -= std::min(it->second.ram, bytes);
  if (it->second.ram == 0 && it->second.disk == 0) tenant_bytes_.erase(it);
}

void TieredStore::ChargeDiskLocked(uint64_t tenant, uint64_t bytes) {
  disk_used_bytes_ += bytes;
  if (bytes > 0) tenant_bytes_[tenant].disk += bytes;
}

void TieredStore::CreditDiskLocked(uint64_t tenant, uint64_t bytes) {
  disk_used_bytes_ -= bytes;
  auto it = tenant_bytes_.find(tenant);
  assert(it != tenant_bytes_.end() && it->second.disk >= bytes);
  if (it == tenant_bytes_.end()) return;
  it->second.disk -= std::min(it->second.disk, bytes);
  if (it->second.ram == 0 && it->second.disk == 0) tenant_bytes_.erase(it);
}

absl::Status TieredStore::FitTenantQuotasLocked(absl::Span<const PutSpec> specs, bool make_room,
                                                std::vector<Demotion>* demotions, bool* fits) {
  *fits = true;
  if (default_quotas_.max_ram_bytes == 0 && tenant_quotas_.empty()) return absl::OkStatus();
  // The slot bytes each tenant's new pages need (a batch is usually one
  // tenant's).
  absl::flat_hash_map<uint64_t, uint64_t> need;
  for (const PutSpec& spec : specs) {
    if (index_.contains(spec.key)) continue;
    need[spec.key.tenant] += RamArena::ClassBytes(RamArena::ClassOf(spec.layout.PageBytes()));
  }
  auto over = [&](uint64_t tenant, uint64_t bytes) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    const uint64_t quota = QuotasOfLocked(tenant).max_ram_bytes;
    return quota != 0 && BytesOfTenantLocked(tenant).ram + bytes > quota;
  };
  auto refuse = [&](uint64_t tenant, std::string message) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    ++quota_refusals_[tenant];
    return absl::ResourceExhaustedError(std::move(message));
  };
  for (const auto& [tenant, bytes] : need) {
    if (!over(tenant, bytes)) continue;
    const uint64_t quota = QuotasOfLocked(tenant).max_ram_bytes;
    if (bytes > quota) {
      return refuse(tenant, absl::StrCat("the batch needs ", bytes,
                                         " bytes of RAM, more than the tenant's RAM quota of ",
                                         quota, " bytes (tenant_max_ram_bytes); nothing stored"));
    }
    if (!make_room) {
      return absl::FailedPreconditionError(
          "the tenant's RAM quota is reached: making room writes its pages to disk, which this "
          "caller may not wait for (put the batch by RPC)");
    }
    if (!EvictRamLocked(quota - bytes, demotions, tenant)) {
      return refuse(tenant, absl::StrCat(
                                "no room for ", bytes, " bytes within the tenant's RAM quota of ",
                                quota, " bytes (tenant_max_ram_bytes): its ",
                                BytesOfTenantLocked(tenant).ram,
                                " bytes in RAM are pinned, reserved or being read; nothing stored"));
    }
  }
  // Demotions leased above still count until they are written.
  *fits = std::none_of(need.begin(), need.end(),
                       [&](const auto& tenant_bytes) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                         return over(tenant_bytes.first, tenant_bytes.second);
                       });
  return absl::OkStatus();
}

std::vector<TenantStats> TieredStore::TenantStatsLocked(
    const absl::flat_hash_map<uint64_t, std::pair<uint64_t, uint64_t>>& pages) const {
  absl::flat_hash_map<uint64_t, TenantStats> by_tag;
  auto of = [&](uint64_t tenant) -> TenantStats& {
    TenantStats& stats = by_tag[tenant];
    stats.tenant = tenant;
    return stats;
  };
  for (const auto& [tenant, bytes] : tenant_bytes_) {
    of(tenant).ram_bytes = bytes.ram;
    of(tenant).disk_bytes = bytes.disk;
  }
  for (const auto& [tenant, counts] : pages) {
    if (counts.first == 0 && counts.second == 0) continue;  // no entry for a tenant with none
    TenantStats& stats = of(tenant);
    stats.ram_pages = counts.first;
    stats.disk_pages = counts.second;
  }
  for (const auto& [tenant, count] : pins_.count_by_tenant()) of(tenant).pins = count;
  for (const auto& [tenant, bytes] : pinned_bytes_) of(tenant).pinned_bytes = bytes;
  for (const auto& [tenant, refusals] : quota_refusals_) of(tenant).quota_refusals = refusals;
  for (const auto& [tenant, quotas] : tenant_quotas_) of(tenant);
  std::vector<TenantStats> out;
  out.reserve(by_tag.size());
  for (auto& [tenant, stats] : by_tag) {
    stats.quotas = QuotasOfLocked(tenant);
    out.push_back(stats);
  }
  std::sort(out.begin(), out.end(),
            [](const TenantStats& a, const TenantStats& b) { return a.tenant < b.tenant; });
  return out;
}

}  // namespace kvtier::store
