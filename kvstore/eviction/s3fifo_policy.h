// S3FifoPolicy: S3-FIFO (Yang et al., SOSP'23), "FIFO queues are all you
// need for cache eviction".
//
// Three FIFO queues: S (small, ~10% of the tier's pages) takes new pages; M
// (main) takes pages that proved useful; G (ghost) remembers keys recently
// evicted from S, without data. Every resident page has a frequency counter
// in 0..3, bumped on access.
//   insert:    a key found in G goes to the head of M (and leaves G);
//              any other key goes to the head of S.
//   evict:     from S when |S| >= max(1, 10% of |S|+|M|), else from M
//              (falling back to the other queue when one yields nothing).
//   evict S:   the tail page moves to the head of M when freq > 1 (its freq
//              restarts at 0), otherwise it is the victim and its key
//              enters G; repeated until a victim is found.
//   evict M:   the tail page with freq > 0 is reinserted at the head with
//              freq - 1; the tail page with freq 0 is the victim.
//   G holds at most |S| + |M| keys (the paper sizes G like the cache; the
//   tier's capacity is in bytes, so its page count stands in), oldest first
//   out.
// Skipped pages stay in S where they are; in M they rotate to the head
// unchanged (a full rotation of skipped pages restores the order).
//
// Thread-safety: not thread-safe (see EvictionPolicy).
#ifndef KVTIER_KVSTORE_EVICTION_S3FIFO_POLICY_H_
#define KVTIER_KVSTORE_EVICTION_S3FIFO_POLICY_H_

#include <cstdint>
#include <list>

#include "absl/container/flat_hash_map.h"
#include "kvstore/eviction/eviction_policy.h"

namespace kvtier::store {

class S3FifoPolicy final : public EvictionPolicy {
 public:
  static constexpr uint8_t kMaxFreq = 3;
  // S's share of the tier's pages, in percent.
  static constexpr size_t kSmallPercent = 10;

  void OnInsert(const PageKey& key) override;
  void OnAccess(const PageKey& key) override;
  void OnRemove(const PageKey& key) override;
  std::optional<PageKey> Evict(SkipFn skip) override;
  size_t size() const override { return small_.size() + main_.size(); }

  // For tests: queue sizes and whether G remembers `key`.
  size_t small_size() const { return small_.size(); }
  size_t main_size() const { return main_.size(); }
  size_t ghost_size() const { return ghost_.size(); }
  bool InGhost(const PageKey& key) const { return ghost_where_.contains(key); }

 private:
  struct Node {
    PageKey key;
    uint8_t freq = 0;
    bool in_main = false;
  };
  using NodeList = std::list<Node>;

  std::optional<PageKey> EvictSmall(SkipFn skip);
  std::optional<PageKey> EvictMain(SkipFn skip);
  void AddGhost(const PageKey& key);

  // Heads are at begin(), tails at back().
  NodeList small_;
  NodeList main_;
  absl::flat_hash_map<PageKey, NodeList::iterator> where_;
  std::list<PageKey> ghost_;
  absl::flat_hash_map<PageKey, std::list<PageKey>::iterator> ghost_where_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_EVICTION_S3FIFO_POLICY_H_
