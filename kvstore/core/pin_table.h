// PinTable: pins by id, each a TTL, an owner and a set of page keys.
//
// A pin has two ids: a local one, small and sequential, that index entries
// and the disk records use, and the public PinId its owner holds (random;
// looked up together with the owner's tenant, so that another tenant's
// lookup of the same id finds nothing). The table knows nothing of pages:
// the store keeps each page's local pin ids in its index entry and updates
// both sides together.
//
// Thread-safety: not thread-safe; the owning store serializes every call.
#ifndef KVTIER_KVSTORE_CORE_PIN_TABLE_H_
#define KVTIER_KVSTORE_CORE_PIN_TABLE_H_

#include <cstdint>
#include <set>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/container/node_hash_map.h"
#include "absl/container/flat_hash_map.h"
#include "common/page_key.h"
#include "kvstore/core/pin_id.h"

namespace kvtier::store {

class PinTable {
 public:
  // A new, empty pin of `tenant` expiring at `expiry_ms`, with a fresh
  // public id; returns its local id (never 0).
  uint64_t Create(int64_t expiry_ms, uint64_t tenant);
  // An empty pin with given ids (one recorded before a restart).
  // REQUIRES: pin_id != 0, !Contains(pin_id), !public_id.IsZero() and
  // Find(tenant, public_id) == 0.
  void Restore(uint64_t pin_id, int64_t expiry_ms, uint64_t tenant, const PinId& public_id);
  // The local id of `tenant`'s pin `public_id`, or 0 when there is none
  // (unknown, expired, or another tenant's).
  uint64_t Find(uint64_t tenant, const PinId& public_id) const;
  // REQUIRES: Contains(pin_id).
  uint64_t tenant(uint64_t pin_id) const;
  const PinId& public_id(uint64_t pin_id) const;
  // Create never returns an id <= pin_id from now on (ids of pins that
  // expired while the store was down are not given to anyone else).
  void SkipIdsThrough(uint64_t pin_id);
  // REQUIRES: Contains(pin_id).
  int64_t expiry_ms(uint64_t pin_id) const;
  bool Contains(uint64_t pin_id) const { return pins_.contains(pin_id); }
  // REQUIRES: Contains(pin_id).
  void SetExpiry(uint64_t pin_id, int64_t expiry_ms);
  // True when `key` was not yet in the pin. REQUIRES: Contains(pin_id).
  bool AddKey(uint64_t pin_id, const PageKey& key);
  // Forgets `key` in one pin (a page deleted under it); no-op if absent.
  void RemoveKey(uint64_t pin_id, const PageKey& key);
  // Removes a pin and returns its keys. REQUIRES: Contains(pin_id).
  absl::flat_hash_set<PageKey> Release(uint64_t pin_id);
  // The id of a pin whose expiry is <= now_ms, or 0 when none.
  uint64_t FirstExpired(int64_t now_ms) const;
  size_t size() const { return pins_.size(); }
  // Live pins of `tenant`.
  size_t CountOf(uint64_t tenant) const;
  // Live pins of every tenant that has some.
  const absl::flat_hash_map<uint64_t, size_t>& count_by_tenant() const {
    return count_by_tenant_;
  }

 private:
  struct Pin {
    int64_t expiry_ms = 0;
    uint64_t tenant = 0;
    PinId public_id;
    absl::flat_hash_set<PageKey> keys;
  };
  struct Owned {
    uint64_t tenant = 0;
    PinId public_id;
    friend bool operator==(const Owned&, const Owned&) = default;
    template <typename H>
    friend H AbslHashValue(H h, const Owned& o) {
      return H::combine(std::move(h), o.tenant, o.public_id);
    }
  };

  void Insert(uint64_t pin_id, int64_t expiry_ms, uint64_t tenant, const PinId& public_id);

  uint64_t next_id_ = 1;
  absl::node_hash_map<uint64_t, Pin> pins_;
  absl::flat_hash_map<Owned, uint64_t> by_public_id_;
  absl::flat_hash_map<uint64_t, size_t> count_by_tenant_;  // no zero counts
  // (expiry_ms, pin id) of every pin.
  std::set<std::pair<int64_t, uint64_t>> by_expiry_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_PIN_TABLE_H_
