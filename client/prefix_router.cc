#include "client/prefix_router.h"

#include <algorithm>
#include <utility>

#include "common/log.h"

namespace kvtier::client {

struct PrefixRouter::Watcher {
  explicit Watcher(std::string member_id) : id(std::move(member_id)) {}

  const std::string id;
  NodePageView view;  // guarded by the router's mu_
  absl::Notification stop;
  absl::Mutex stream_mu;
  // The open stream, for Stop to cancel.
  CacheEventStream* stream ABSL_GUARDED_BY(stream_mu) = nullptr;
  std::thread thread;

  // Ends the thread: cancels its stream and waits for it.
  void Stop() {
    stop.Notify();
    {
      absl::MutexLock lock(&stream_mu);
      if (stream != nullptr) stream->Cancel();
    }
    if (thread.joinable()) thread.join();
  }
};

PrefixRouter::PrefixRouter(ClusterClient* cluster, const PrefixRouterOptions& options)
    : cluster_(cluster), options_(options) {
  Reconcile(cluster_->view());
  follower_ = std::thread([this] { FollowMembers(); });
}

PrefixRouter::~PrefixRouter() {
  stop_.Notify();
  if (follower_.joinable()) follower_.join();
  absl::flat_hash_map<std::string, std::unique_ptr<Watcher>> watchers;
  {
    absl::MutexLock lock(&mu_);
    watchers.swap(watchers_);
  }
  for (auto& [id, watcher] : watchers) watcher->Stop();
}

void PrefixRouter::FollowMembers() {
  while (!stop_.WaitForNotificationWithTimeout(options_.member_poll)) {
    Reconcile(cluster_->view());
  }
}

void PrefixRouter::Reconcile(const v1::MembersResponse& view) {
  std::vector<std::unique_ptr<Watcher>> gone;
  {
    absl::MutexLock lock(&mu_);
    absl::flat_hash_map<std::string, bool> wanted;
    for (const v1::Member& member : view.members()) {
      wanted[member.id()] = member.state() != v1::MEMBER_DOWN;
    }
    for (auto it = watchers_.begin(); it != watchers_.end();) {
      auto w = wanted.find(it->first);
      if (w == wanted.end() || !w->second) {
        gone.push_back(std::move(it->second));
        watchers_.erase(it++);
      } else {
        ++it;
      }
    }
    for (const auto& [id, watch] : wanted) {
      if (!watch || watchers_.contains(id)) continue;
      auto watcher = std::make_unique<Watcher>(id);
      Watcher* raw = watcher.get();
      watchers_[id] = std::move(watcher);
      raw->thread = std::thread([this, raw] { Watch(raw); });
    }
    stats_.members = static_cast<uint32_t>(watchers_.size());
  }
  for (auto& watcher : gone) watcher->Stop();
}

void PrefixRouter::Watch(Watcher* watcher) {
  bool first = true;
  while (!watcher->stop.HasBeenNotified()) {
    absl::StatusOr<std::shared_ptr<StoreClient>> client = cluster_->member(watcher->id);
    if (client.ok()) {
      v1::WatchCacheEventsRequest request;
      {
        absl::MutexLock lock(&mu_);
        request = watcher->view.ResumeRequest(options_.layer);
        if (!first) ++stats_.reconnects;
      }
      first = false;
      std::unique_ptr<CacheEventStream> stream = (*client)->WatchCacheEvents(request);
      {
        absl::MutexLock lock(&watcher->stream_mu);
        watcher->stream = stream.get();
      }
      // Stop may have come before the stream was published.
      if (watcher->stop.HasBeenNotified()) stream->Cancel();
      v1::CacheEventBatch batch;
      while (stream->Next(&batch)) {
        absl::MutexLock lock(&mu_);
        absl::Status applied = watcher->view.Apply(batch);
        if (!applied.ok()) {
          ++stats_.rejected_batches;
          KVTIER_LOG(WARNING) << "member " << watcher->id << ": " << applied
                              << "; starting over from a snapshot";
          watcher->view.Clear();
          stream->Cancel();
          break;
        }
        ++stats_.batches;
        stats_.events += static_cast<uint64_t>(batch.events_size());
        if (batch.reset()) ++stats_.snapshots;
      }
      {
        absl::MutexLock lock(&watcher->stream_mu);
        watcher->stream = nullptr;
      }
      stream.reset();  // finishes the call
    }
    watcher->stop.WaitForNotificationWithTimeout(options_.retry_interval);
  }
}

std::vector<NodePrefix> PrefixRouter::Locate(absl::Span<const Hash128> chain) const {
  std::vector<NodePrefix> found;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, watcher] : watchers_) {
      if (!watcher->view.synced()) continue;
      const uint32_t n = watcher->view.PrefixPages(chain, options_.layer);
      if (n > 0) found.push_back(NodePrefix{.node_id = id, .prefix_pages = n});
    }
  }
  std::sort(found.begin(), found.end(), [](const NodePrefix& a, const NodePrefix& b) {
    return a.prefix_pages != b.prefix_pages ? a.prefix_pages > b.prefix_pages
                                            : a.node_id < b.node_id;
  });
  return found;
}

bool PrefixRouter::AllSynced() const {
  for (const auto& [id, watcher] : watchers_) {
    if (!watcher->view.synced()) return false;
  }
  return true;
}

bool PrefixRouter::AwaitSynced(absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  return mu_.AwaitWithTimeout(absl::Condition(this, &PrefixRouter::AllSynced), timeout);
}

PrefixRouterStats PrefixRouter::stats() const {
  absl::MutexLock lock(&mu_);
  PrefixRouterStats stats = stats_;
  stats.synced_members = 0;
  for (const auto& [id, watcher] : watchers_) stats.synced_members += watcher->view.synced();
  return stats;
}

}  // namespace kvtier::client
