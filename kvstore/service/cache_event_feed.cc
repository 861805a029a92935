#include "kvstore/service/cache_event_feed.h"

#include <atomic>
#include <optional>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "kvtier/v1/convert.h"

namespace kvtier::store {
namespace {

// A stream refused before it started: finishes at once, deletes itself.
class RefusedStream final : public grpc::ServerWriteReactor<v1::CacheEventBatch> {
 public:
  explicit RefusedStream(const absl::Status& status) { Finish(v1::ToGrpcStatus(status)); }
  void OnDone() override { delete this; }
};

v1::CacheEvent::Kind KindToProto(CacheEvent::Kind kind) {
  return kind == CacheEvent::Kind::kStored ? v1::CacheEvent::STORED : v1::CacheEvent::REMOVED;
}

}  // namespace

// One WatchCacheEvents call. The pump thread alone runs PumpOnce and owns
// the cursor and the snapshot; gRPC's threads run the reactions, which
// share only mu_'s fields with it.
class CacheEventFeed::Stream final : public grpc::ServerWriteReactor<v1::CacheEventBatch> {
 public:
  Stream(CacheEventFeed* feed, uint64_t tenant, const v1::WatchCacheEventsRequest& request)
      : feed_(feed),
        tenant_(tenant),
        layer_(request.has_layer() ? std::optional<uint32_t>(request.layer()) : std::nullopt),
        max_batch_(request.max_batch_events() == 0 ? kDefaultBatchEvents
                                                   : request.max_batch_events()) {
    // A cursor of this log resumes; Read tells one that is too old or in
    // the future, and the stream starts over from a snapshot then.
    if (request.epoch() == feed->log_->epoch() && request.from_seq() != 0) {
      cursor_ = request.from_seq();
    } else {
      needs_snapshot_ = true;
    }
  }

  uint64_t tenant() const { return tenant_; }

  // Sends the next batch when no write is in flight and there is one.
  void PumpOnce(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      if (writing_ || finishing_) return;
    }
    batch_.Clear();
    batch_.set_node_id(feed_->options_.node_id);
    batch_.set_epoch(feed_->log_->epoch());
    if (!needs_snapshot_ && !in_snapshot_) {
      CacheEventLog::Slice slice = feed_->log_->Read(cursor_, tenant_, layer_, max_batch_);
      if (slice.lost) {
        needs_snapshot_ = true;
      } else {
        cursor_ = slice.next_seq;
        if (slice.events.empty() && now - last_sent_ < feed_->options_.heartbeat) return;
        for (const CacheEvent& event : slice.events) {
          v1::CacheEvent* out = batch_.add_events();
          out->set_kind(KindToProto(event.kind));
          v1::KeyToProto(event.key, out->mutable_key());
        }
        batch_.set_next_seq(cursor_);
        backlog_.store(slice.events.size() == max_batch_, std::memory_order_relaxed);
        Send(now);
        return;
      }
    }
    if (needs_snapshot_) TakeSnapshot();
    const size_t end = std::min(snapshot_.size(), snapshot_pos_ + max_batch_);
    for (; snapshot_pos_ < end; ++snapshot_pos_) {
      v1::CacheEvent* out = batch_.add_events();
      out->set_kind(v1::CacheEvent::STORED);
      v1::KeyToProto(snapshot_[snapshot_pos_], out->mutable_key());
    }
    if (snapshot_pos_ == snapshot_.size()) {
      batch_.set_snapshot_done(true);
      batch_.set_next_seq(cursor_);
      in_snapshot_ = false;
      std::vector<PageKey>().swap(snapshot_);
      backlog_.store(cursor_ < feed_->log_->next_seq(), std::memory_order_relaxed);
    } else {
      backlog_.store(true, std::memory_order_relaxed);
    }
    Send(now);
  }

  // Ends the stream with UNAVAILABLE and `reason` (now, or when its write
  // completes).
  void Stop(const std::string& reason) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      if (stop_reason_.empty()) stop_reason_ = reason;
    }
    EndWith(grpc::Status(grpc::StatusCode::UNAVAILABLE, reason), &stopped_);
  }

  void OnCancel() override {
    EndWith(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"), &cancelled_);
  }

  void OnWriteDone(bool ok) override ABSL_LOCKS_EXCLUDED(mu_) {
    std::optional<grpc::Status> finish;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!finishing_ && (!ok || cancelled_ || stopped_)) {
        finishing_ = true;
        finish = stopped_ ? grpc::Status(grpc::StatusCode::UNAVAILABLE, stop_reason_)
                          : grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke");
      }
    }
    if (finish.has_value()) {
      Finish(*finish);
    } else if (backlog_.load(std::memory_order_relaxed)) {
      feed_->Kick();
    }
  }

  // The last reaction: the feed drops its reference, which may delete this.
  void OnDone() override { feed_->Forget(this); }

 private:
  void TakeSnapshot() {
    // next_seq first, then the pages (cache_events.h says why).
    cursor_ = feed_->log_->next_seq();
    snapshot_.clear();
    for (const HeldPage& page : feed_->store_->HeldPages(/*pinned_only=*/false)) {
      if (page.key.tenant != tenant_) continue;
      if (layer_.has_value() && page.key.layer != *layer_) continue;
      snapshot_.push_back(page.key);
    }
    snapshot_pos_ = 0;
    needs_snapshot_ = false;
    in_snapshot_ = true;
    batch_.set_reset(true);
  }

  void Send(absl::Time now) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      if (finishing_) return;
      writing_ = true;
    }
    last_sent_ = now;
    StartWrite(&batch_);
  }

  // Finishes with `status` unless a write is in flight (OnWriteDone
  // finishes then) or the stream is finishing already.
  void EndWith(const grpc::Status& status, bool* flag) ABSL_LOCKS_EXCLUDED(mu_) {
    {
      absl::MutexLock lock(&mu_);
      *flag = true;
      if (writing_ || finishing_) return;
      finishing_ = true;
    }
    Finish(status);
  }

  CacheEventFeed* const feed_;
  const uint64_t tenant_;
  const std::optional<uint32_t> layer_;
  const size_t max_batch_;

  // The pump thread's alone.
  uint64_t cursor_ = 0;
  bool needs_snapshot_ = false;
  bool in_snapshot_ = false;
  std::vector<PageKey> snapshot_;
  size_t snapshot_pos_ = 0;
  absl::Time last_sent_ = absl::InfinitePast();
  // The batch being written: written by the pump only while no write is in
  // flight, and kept unchanged until OnWriteDone.
  v1::CacheEventBatch batch_;
  // More is waiting than the last batch carried: its write's completion
  // wakes the pump at once.
  std::atomic<bool> backlog_{false};

  absl::Mutex mu_;
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool finishing_ ABSL_GUARDED_BY(mu_) = false;  // Finish called or about to be
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool stopped_ ABSL_GUARDED_BY(mu_) = false;
  std::string stop_reason_ ABSL_GUARDED_BY(mu_);
};

CacheEventFeed::CacheEventFeed(CacheEventLog* log, Store* store,
                               const CacheEventFeedOptions& options)
    : log_(log), store_(store), options_(options), pump_([this] { Pump(); }) {}

CacheEventFeed::~CacheEventFeed() {
  Stop();
  // A stream's OnDone calls Forget: no stream may outlive the feed. The
  // server's shutdown ends them; wait for the last ones here.
  absl::MutexLock lock(&mu_);
  while (!mu_.AwaitWithTimeout(absl::Condition(this, &CacheEventFeed::NoStreams),
                               absl::Seconds(5))) {
    KVTIER_LOG(WARNING) << "waiting for " << streams_.size() << " cache event streams to end";
  }
}

grpc::ServerWriteReactor<v1::CacheEventBatch>* CacheEventFeed::Refuse(
    const absl::Status& status) {
  return new RefusedStream(status);
}

absl::Status CacheEventFeed::ValidateRequest(const v1::WatchCacheEventsRequest& request) {
  if (request.max_batch_events() > kMaxBatchEvents) {
    return absl::InvalidArgumentError(absl::StrCat("max_batch_events ",
                                                   request.max_batch_events(), " exceeds ",
                                                   kMaxBatchEvents));
  }
  return absl::OkStatus();
}

grpc::ServerWriteReactor<v1::CacheEventBatch>* CacheEventFeed::Watch(
    grpc::CallbackServerContext* /*context*/, uint64_t tenant,
    const v1::WatchCacheEventsRequest& request, const std::function<bool()>& granted) {
  if (absl::Status valid = ValidateRequest(request); !valid.ok()) {
    return Refuse(valid);
  }
  absl::MutexLock lock(&mu_);
  if (stopping_) return Refuse(absl::UnavailableError("the server is stopping"));
  // Checked under mu_, which EndStreams takes: a grant revoked before this
  // check gets no stream, one revoked after it has its stream ended.
  if (granted != nullptr && !granted()) {
    return Refuse(absl::UnavailableError("the credentials were reloaded meanwhile; watch again"));
  }
  if (streams_.size() >= options_.max_watchers) {
    return Refuse(absl::ResourceExhaustedError(
        absl::StrCat("the node serves ", options_.max_watchers,
                     " cache event streams already (max_event_watchers)")));
  }
  uint32_t& of_tenant = per_tenant_[tenant];
  if (of_tenant >= options_.max_watchers_per_tenant) {
    return Refuse(absl::ResourceExhaustedError(
        absl::StrCat("this tenant has ", of_tenant,
                     " cache event streams open already (max_event_watchers_per_tenant)")));
  }
  ++of_tenant;
  streams_.push_back(std::make_shared<Stream>(this, tenant, request));
  kicked_ = true;
  return streams_.back().get();
}

void CacheEventFeed::Stop() {
  std::vector<std::shared_ptr<Stream>> streams;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && !pump_.joinable()) return;
    stopping_ = true;
    streams = streams_;
  }
  if (pump_.joinable()) pump_.join();
  for (const std::shared_ptr<Stream>& stream : streams) stream->Stop("the server is stopping");
}

void CacheEventFeed::EndStreams(const std::string& reason) {
  std::vector<std::shared_ptr<Stream>> streams;
  {
    absl::MutexLock lock(&mu_);
    streams = streams_;
  }
  for (const std::shared_ptr<Stream>& stream : streams) stream->Stop(reason);
}

size_t CacheEventFeed::watchers() const {
  absl::MutexLock lock(&mu_);
  return streams_.size();
}

void CacheEventFeed::Kick() {
  absl::MutexLock lock(&mu_);
  kicked_ = true;
}

void CacheEventFeed::Forget(Stream* stream) {
  std::shared_ptr<Stream> last;  // dropped after the lock is released
  absl::MutexLock lock(&mu_);
  for (size_t i = 0; i < streams_.size(); ++i) {
    if (streams_[i].get() != stream) continue;
    last = std::move(streams_[i]);
    streams_[i] = std::move(streams_.back());
    streams_.pop_back();
    if (--per_tenant_[stream->tenant()] == 0) per_tenant_.erase(stream->tenant());
    break;
  }
  // `last` may be the stream's last reference: it is deleted on return,
  // after mu_ is released (destructors run in reverse order).
}

void CacheEventFeed::Pump() {
  while (true) {
    std::vector<std::shared_ptr<Stream>> streams;
    {
      absl::MutexLock lock(&mu_);
      const absl::Condition woken(this, &CacheEventFeed::Woken);
      if (streams_.empty()) {
        mu_.Await(woken);
      } else {
        mu_.AwaitWithTimeout(woken, options_.interval);
      }
      if (stopping_) return;
      kicked_ = false;
      streams = streams_;
    }
    const absl::Time now = absl::Now();
    for (const std::shared_ptr<Stream>& stream : streams) stream->PumpOnce(now);
  }
}

}  // namespace kvtier::store
