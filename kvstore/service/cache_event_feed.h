// CacheEventFeed: the streams of WatchCacheEvents (store.proto), served
// from a node's CacheEventLog (kvstore/core/cache_events.h).
//
//   CacheEventFeed feed(&log, store, options);
//   ... return feed.Watch(context, caller.tenant, *request, node_id);  // per call
//   feed.Stop();  // before the server shuts down: ends every stream
//
// Each stream is one gRPC write reactor. A stream that must resynchronise
// (its cursor is not in the log) gets a snapshot of its tenant's pages
// first: the feed takes the log's next_seq, then Store::HeldPages, and
// then sends the events from that number on (the rule in cache_events.h).
//
// One pump thread fills the streams: every `interval` it sends each idle
// stream the events that arrived since its last batch (so events are
// batched by time as well as by count), and at once when a stream's write
// completes and a full batch is waiting. Snapshots are taken by that
// thread alone, one at a time, so reconnecting clients cannot hold the
// store's lock for more than one O(pages) walk at once. A stream with
// nothing to send gets an empty batch every `heartbeat`, which moves its
// cursor past other tenants' events.
//
// Thread-safety: thread-safe. The log and the store must outlive the feed.
#ifndef KVTIER_KVSTORE_SERVICE_CACHE_EVENT_FEED_H_
#define KVTIER_KVSTORE_SERVICE_CACHE_EVENT_FEED_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/server_callback.h"
#include "kvstore/core/cache_events.h"
#include "kvstore/core/store.h"
#include "kvtier/v1/store.pb.h"

namespace kvtier::store {

struct CacheEventFeedOptions {
  // The member id every batch names.
  std::string node_id = "local";
  uint32_t max_watchers = 64;
  uint32_t max_watchers_per_tenant = 8;
  absl::Duration interval = absl::Milliseconds(10);
  absl::Duration heartbeat = absl::Seconds(5);
};

class CacheEventFeed {
 public:
  // Largest max_batch_events a request may ask for, and the default.
  static constexpr uint32_t kMaxBatchEvents = 65536;
  static constexpr uint32_t kDefaultBatchEvents = 1024;

  CacheEventFeed(CacheEventLog* log, Store* store, const CacheEventFeedOptions& options);
  ~CacheEventFeed();  // Stop()s
  CacheEventFeed(const CacheEventFeed&) = delete;
  CacheEventFeed& operator=(const CacheEventFeed&) = delete;

  // A stream of `tenant`'s events answering `request`, or one that finishes
  // at once with the request's error (store.proto lists the codes), or with
  // UNAVAILABLE when `granted` (if given) is false as the stream is about
  // to be registered (what granted it was revoked meanwhile, and EndStreams
  // may have run already).
  grpc::ServerWriteReactor<v1::CacheEventBatch>* Watch(
      grpc::CallbackServerContext* context, uint64_t tenant,
      const v1::WatchCacheEventsRequest& request,
      const std::function<bool()>& granted = nullptr) ABSL_LOCKS_EXCLUDED(mu_);

  // Ends every stream with UNAVAILABLE and refuses new ones; waits for the
  // pump thread. Idempotent.
  void Stop() ABSL_LOCKS_EXCLUDED(mu_);
  // Ends the streams open now with UNAVAILABLE and `reason`, and goes on
  // serving new ones (a watcher that may still watch comes back with its
  // cursor: ResumeRequest).
  void EndStreams(const std::string& reason) ABSL_LOCKS_EXCLUDED(mu_);

  // Open streams, for tests and stats.
  size_t watchers() const ABSL_LOCKS_EXCLUDED(mu_);

  // A stream that finishes at once with `status` (not OK).
  static grpc::ServerWriteReactor<v1::CacheEventBatch>* Refuse(const absl::Status& status);

  // INVALID_ARGUMENT for a request no stream can answer.
  static absl::Status ValidateRequest(const v1::WatchCacheEventsRequest& request);

 private:
  class Stream;

  void Pump() ABSL_LOCKS_EXCLUDED(mu_);
  // Called by a stream's OnDone, before it is deleted.
  void Forget(Stream* stream) ABSL_LOCKS_EXCLUDED(mu_);
  // Wakes the pump before its interval is up.
  void Kick() ABSL_LOCKS_EXCLUDED(mu_);
  bool Woken() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_ || kicked_; }
  bool NoStreams() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return streams_.empty(); }

  CacheEventLog* const log_;
  Store* const store_;
  const CacheEventFeedOptions options_;

  mutable absl::Mutex mu_;
  // Open streams, with a reference each while the pump uses them.
  std::vector<std::shared_ptr<Stream>> streams_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint64_t, uint32_t> per_tenant_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool kicked_ ABSL_GUARDED_BY(mu_) = false;
  std::thread pump_;
};

}  // namespace kvtier::store

#endif  // KVTIER_KVSTORE_SERVICE_CACHE_EVENT_FEED_H_
