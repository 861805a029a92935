// PageIndex: what the store knows of every committed page.
//
// The index is one hash map guarded by the store's mutex rather than a
// sharded map: every operation updates the index, both eviction policies,
// the RAM arena and the pin table together, and those updates must be one
// atomic step for a batch to be all-or-nothing. The mutex is held only for
// metadata work (O(batch) hash operations); page bytes are copied, hashed
// and written to RocksDB outside it.
//
// Entry invariants (under the store mutex):
//   - in_ram || on_disk || demoting-with-a-RAM-slot: an entry always holds
//     its bytes somewhere.
//   - readers > 0 keeps `slot` allocated and in_ram true until the entry
//     is removed; a removed entry's slot with readers goes to the store's
//     zombie list and is freed by the last reader.
//   - demoting: a RocksDB write of the RAM bytes is in flight (it holds one
//     of `readers`); the page is still served from RAM.
#ifndef KVTIER_KVSTORE_CORE_PAGE_INDEX_H_
#define KVTIER_KVSTORE_CORE_PAGE_INDEX_H_

#include <cstdint>

#include "absl/container/inlined_vector.h"
#include "absl/container/node_hash_map.h"
#include "common/page_key.h"
#include "kvstore/core/ram_arena.h"
#include "kvstore/core/rocks_tier.h"

namespace kvtier::store {

struct PageEntry {
  PageMeta meta;
  // Unique per entry; tells a re-put page from the one an unlocked step
  // started with.
  uint64_t generation = 0;
  bool in_ram = false;
  RamArena::Slot slot;  // valid when in_ram
  bool on_disk = false;
  bool demoting = false;
  bool promoting = false;
  uint32_t readers = 0;
  // Reads served from disk since the page last entered RAM (admission).
  uint32_t disk_reads = 0;
  absl::InlinedVector<uint64_t, 1> pin_ids;

  bool pinned() const { return !pin_ids.empty(); }
};

// node_hash_map: entry pointers stay valid while other keys are inserted.
using PageIndex = absl::node_hash_map<PageKey, PageEntry>;

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_CORE_PAGE_INDEX_H_
