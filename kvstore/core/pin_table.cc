#include "kvstore/core/pin_table.h"

#include <cassert>

namespace kvtier::store {

void PinTable::Insert(uint64_t pin_id, int64_t expiry_ms, uint64_t tenant,
                      const PinId& public_id) {
  Pin& pin = pins_[pin_id];
  pin.expiry_ms = expiry_ms;
  pin.tenant = tenant;
  pin.public_id = public_id;
  by_expiry_.emplace(expiry_ms, pin_id);
  by_public_id_.emplace(Owned{tenant, public_id}, pin_id);
  ++count_by_tenant_[tenant];
}

size_t PinTable::CountOf(uint64_t tenant) const {
  auto it = count_by_tenant_.find(tenant);
  return it == count_by_tenant_.end() ? 0 : it->second;
}

uint64_t PinTable::Create(int64_t expiry_ms, uint64_t tenant) {
  PinId public_id = PinId::Random();
  // 2^-128 per pin; but an id given twice would be one pin for two owners.
  while (Find(tenant, public_id) != 0) public_id = PinId::Random();
  const uint64_t id = next_id_++;
  Insert(id, expiry_ms, tenant, public_id);
  return id;
}

void PinTable::Restore(uint64_t pin_id, int64_t expiry_ms, uint64_t tenant,
                       const PinId& public_id) {
  assert(pin_id != 0 && !pins_.contains(pin_id));
  assert(!public_id.IsZero() && Find(tenant, public_id) == 0);
  Insert(pin_id, expiry_ms, tenant, public_id);
  SkipIdsThrough(pin_id);
}

uint64_t PinTable::Find(uint64_t tenant, const PinId& public_id) const {
  auto it = by_public_id_.find(Owned{tenant, public_id});
  return it == by_public_id_.end() ? 0 : it->second;
}

uint64_t PinTable::tenant(uint64_t pin_id) const {
  auto it = pins_.find(pin_id);
  assert(it != pins_.end());
  return it->second.tenant;
}

const PinId& PinTable::public_id(uint64_t pin_id) const {
  auto it = pins_.find(pin_id);
  assert(it != pins_.end());
  return it->second.public_id;
}

void PinTable::SkipIdsThrough(uint64_t pin_id) {
  if (pin_id >= next_id_) next_id_ = pin_id + 1;
}

int64_t PinTable::expiry_ms(uint64_t pin_id) const {
  auto it = pins_.find(pin_id);
  assert(it != pins_.end());
  return it->second.expiry_ms;
}

void PinTable::SetExpiry(uint64_t pin_id, int64_t expiry_ms) {
  auto it = pins_.find(pin_id);
  assert(it != pins_.end());
  by_expiry_.erase({it->second.expiry_ms, pin_id});
  it->second.expiry_ms = expiry_ms;
  by_expiry_.emplace(expiry_ms, pin_id);
}

bool PinTable::AddKey(uint64_t pin_id, const PageKey& key) {
  auto it = pins_.find(pin_id);
  assert(it != pins_.end());
  return it->second.keys.insert(key).second;
}

void PinTable::RemoveKey(uint64_t pin_id, const PageKey& key) {
  auto it = pins_.find(pin_id);
  if (it != pins_.end()) it->second.keys.erase(key);
}

absl::flat_hash_set<PageKey> PinTable::Release(uint64_t pin_id) {
  auto it = pins_.find(pin_id);
  assert(it != pins_.end());
  absl::flat_hash_set<PageKey> keys = std::move(it->second.keys);
  by_expiry_.erase({it->second.expiry_ms, pin_id});
  by_public_id_.erase(Owned{it->second.tenant, it->second.public_id});
  if (auto count = count_by_tenant_.find(it->second.tenant); --count->second == 0) {
    count_by_tenant_.erase(count);
  }
  pins_.erase(it);
  return keys;
}

uint64_t PinTable::FirstExpired(int64_t now_ms) const {
  if (by_expiry_.empty() || by_expiry_.begin()->first > now_ms) return 0;
  return by_expiry_.begin()->second;
}

}  // namespace kvtier::store
