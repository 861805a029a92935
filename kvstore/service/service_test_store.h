// FakeStore: a Store for KvStoreService's tests that records every call
// and answers with canned results.
#ifndef KVTIER_KVSTORE_SERVICE_SERVICE_TEST_STORE_H_
#define KVTIER_KVSTORE_SERVICE_SERVICE_TEST_STORE_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "kvstore/core/store.h"

namespace kvtier::store::testing {

class FakeStore final : public Store {
 public:
  absl::StatusOr<LookupResult> Lookup(uint64_t tenant, absl::Span<const Hash128> chain,
                                      uint32_t layer_begin, uint32_t layer_count) override {
    ++calls;
    lookup_tenant = tenant;
    lookup_chain.assign(chain.begin(), chain.end());
    lookup_layers = {layer_begin, layer_count};
    LookupResult r;
    r.prefix_pages = 1;
    for (size_t i = 0; i < chain.size() * layer_count; ++i) {
      r.tiers.push_back(i == 0 ? Tier::kRam : i == 1 ? Tier::kDisk : Tier::kNone);
    }
    return r;
  }
  StoredBytes BytesOf(absl::Span<const PageKey>) const override { return stored_bytes; }
  using Store::Reserve;
  absl::StatusOr<Reservation> Reserve(absl::Span<const PutSpec> specs,
                                      const ReserveOptions&) override {
    ++calls;
    buffers.assign(specs.size(), std::string());
    std::vector<absl::Span<uint8_t>> spans;
    for (size_t i = 0; i < specs.size(); ++i) {
      buffers[i].resize(specs[i].layout.PageBytes());
      spans.emplace_back(reinterpret_cast<uint8_t*>(buffers[i].data()), buffers[i].size());
    }
    return MakeReservation(this, 7, std::vector<PutSpec>(specs.begin(), specs.end()), spans);
  }
  absl::StatusOr<std::vector<PutResult>> Commit(Reservation reservation) override {
    ++calls;
    for (size_t i = 0; i < reservation.size(); ++i) committed.push_back(reservation.spec(i));
    DisarmReservation(reservation);
    std::vector<PutResult> out(reservation.size());
    out.back().already_present = true;
    return out;
  }
  void Abort(Reservation reservation) override { DisarmReservation(reservation); }
  absl::StatusOr<std::vector<GetResult>> BatchGet(absl::Span<const PageKey> keys) override {
    ++calls;
    std::vector<GetResult> out(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) out[i].status = get_statuses[i % get_statuses.size()];
    out[0].layout = PageLayout{.page_size = 16, .n_kv_heads = 1, .head_dim = 8};
    out[0].data = "0123456789";
    out[0].checksum = 99;
    out[0].tier = Tier::kDisk;
    return out;
  }
  absl::StatusOr<uint32_t> Delete(absl::Span<const PageKey> keys, bool force) override {
    ++calls;
    delete_force = force;
    return static_cast<uint32_t>(keys.size());
  }
  absl::StatusOr<PinId> Pin(uint64_t tenant, absl::Span<const PageKey> keys, uint64_t ttl_ms,
                            const PinId& pin_id) override {
    ++calls;
    pin_args = {keys.size(), ttl_ms, pin_id};
    pin_tenant = tenant;
    return kPin;
  }
  absl::StatusOr<uint64_t> DemoteAll(absl::Time) override { return 0; }
  absl::Status Unpin(uint64_t tenant, const PinId& pin_id) override {
    ++calls;
    pin_tenant = tenant;
    return pin_id == kPin ? absl::OkStatus() : absl::NotFoundError("no pin");
  }
  std::vector<HeldPage> HeldPages(bool /*pinned_only*/) const override { return {}; }
  StoreStats Stats() const override {
    StoreStats s;
    s.ram = {1, 2, 3, 4, 5, 6, 7, 8};
    s.disk = {11, 12, 13, 14, 15, 16, 17, 18};
    s.put_pages = 21;
    s.put_duplicate_pages = 22;
    s.get_misses = 23;
    s.lost_pages = 24;
    s.demotions = 25;
    s.promotions = 26;
    s.dropped_pages = 27;
    s.reserved_bytes = 28;
    s.active_pins = 29;
    s.lookups = 30;
    s.quarantined_bytes = 31;
    s.unverified_disk_pages = 32;
    s.set_aside_files = 33;
    TenantStats t;
    t.tenant = access::kAnonymousTag;
    t.ram_bytes = 41;
    t.disk_bytes = 42;
    t.ram_pages = 43;
    t.disk_pages = 44;
    t.pins = 45;
    t.pinned_bytes = 46;
    t.quotas.max_ram_bytes = 47;
    t.quotas.max_disk_bytes = 48;
    t.quotas.max_pins = 49;
    t.quotas.max_pinned_bytes = 50;
    t.quota_refusals = 51;
    s.tenants.push_back(t);
    for (uint64_t tag : {uint64_t{0x0123456789abcdef}, access::kSharedTag}) {
      s.tenants.emplace_back();
      s.tenants.back().tenant = tag;
    }
    return s;
  }
  void SetTenantQuotas(absl::flat_hash_map<uint64_t, TenantQuotas> quotas) override {
    tenant_quotas = std::move(quotas);
  }

  static constexpr PinId kPin{.hi = 0x1234, .lo = 0x5678};
  int calls = 0;
  uint64_t lookup_tenant = 99;
  uint64_t pin_tenant = 99;
  std::vector<Hash128> lookup_chain;
  std::pair<uint32_t, uint32_t> lookup_layers;
  std::vector<std::string> buffers;
  std::vector<PutSpec> committed;
  std::vector<absl::Status> get_statuses = {absl::OkStatus()};
  bool delete_force = false;
  std::tuple<size_t, uint64_t, PinId> pin_args;
  StoredBytes stored_bytes = {.ram = 10};  // what BatchGet returns
  absl::flat_hash_map<uint64_t, TenantQuotas> tenant_quotas;

 protected:
  void AbortById(uint64_t) override {}
};

}  // namespace kvtier::store::testing

#endif  // KVTIER_KVSTORE_SERVICE_SERVICE_TEST_STORE_H_
