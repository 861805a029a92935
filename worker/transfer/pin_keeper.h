// SequencePin and PinKeeper: a sequence's store pin, kept alive while the
// sequence lives.
//
// The store drops a pin when its TTL passes. A sequence's backups create
// and extend its pin, but a sequence that waits (a paused request, a slow
// client) makes no backups; PinKeeper extends every kept pin on a timer of
// its own, through the transfer queue, so the pin outlives any pause.
//
// Thread-safety: thread-safe. SequencePin is shared by the cache manager
// (which creates and releases it), its backup transfers (which create or
// extend the pin after their put) and the keeper; its mutex serialises
// them, so one pin id results.
#ifndef KVTIER_WORKER_TRANSFER_PIN_KEEPER_H_
#define KVTIER_WORKER_TRANSFER_PIN_KEEPER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/page_key.h"
#include "worker/transfer/page_transfer_queue.h"

namespace kvtier::worker {

struct SequencePin {
  absl::Mutex mu;
  // The store's id of the pin (opaque bytes); empty until the sequence's
  // first backup pins its pages.
  std::string pin_id ABSL_GUARDED_BY(mu);
  // Set when the sequence ends: nothing pins for it any more, so a backup
  // that outlived its deadline cannot create a pin nobody releases.
  bool released ABSL_GUARDED_BY(mu) = false;
  // The store no longer knows pin_id (it expired after all, or the store
  // lost it): the cache manager pins the sequence's pages again under a new
  // pin; until then backups store their pages unpinned and list them in
  // `uncovered` for that new pin.
  bool lost ABSL_GUARDED_BY(mu) = false;
  std::vector<PageKey> uncovered ABSL_GUARDED_BY(mu);
};

class PinKeeper {
 public:
  // Extends every kept pin to `ttl_ms` every `period` (> 0), each extension
  // a transfer of `transfers` with `deadline`. REQUIRES: `transfers`
  // outlives the keeper.
  PinKeeper(PageTransferQueue* transfers, uint64_t ttl_ms, absl::Duration period,
            absl::Duration deadline);
  // Stops the timer; extensions already submitted finish on the queue.
  ~PinKeeper();
  PinKeeper(const PinKeeper&) = delete;
  PinKeeper& operator=(const PinKeeper&) = delete;

  // Keeps `pin` alive until it is released (or destroyed).
  void Keep(const std::shared_ptr<SequencePin>& pin) ABSL_LOCKS_EXCLUDED(mu_);
  // Extensions submitted so far.
  uint64_t extensions() const ABSL_LOCKS_EXCLUDED(mu_);
  // One round now, as the timer runs it: an extension for every kept pin
  // that is not released (set and not lost when it runs), waiting for
  // each; released ones are forgotten.
  void ExtendNow() ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Loop() ABSL_LOCKS_EXCLUDED(mu_);

  // Const after construction.
  PageTransferQueue* const transfers_;
  const uint64_t ttl_ms_;
  const absl::Duration period_;
  const absl::Duration deadline_;

  mutable absl::Mutex mu_;
  std::vector<std::weak_ptr<SequencePin>> pins_ ABSL_GUARDED_BY(mu_);
  uint64_t extensions_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;

  // Last: joined first.
  std::thread thread_;
};

}  // namespace kvtier::worker

#endif  // KVTIER_WORKER_TRANSFER_PIN_KEEPER_H_
