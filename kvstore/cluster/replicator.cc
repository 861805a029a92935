#include "kvstore/cluster/replicator.h"

#include <algorithm>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "placement/placement.h"
#include "common/log.h"
#include "kvtier/v1/convert.h"

namespace kvtier::cluster {
namespace {

std::set<std::string> UpIds(const MemberView& view) {
  std::set<std::string> ids;
  for (const v1::Member& m : view.members) {
    if (m.state() == v1::MEMBER_UP) ids.insert(m.id());
  }
  return ids;
}

std::vector<std::string> OwnerIds(const placement::Placement& placement, const Hash128& hash,
                                  size_t count) {
  std::vector<std::string> ids;
  for (size_t i : placement.Owners(hash, count)) ids.push_back(placement.member(i).id());
  return ids;
}

bool Contains(const std::vector<std::string>& ids, const std::string& id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

Replicator::Replicator(store::Store* store, std::string self_id,
                       std::shared_ptr<const MemberView> baseline,
                       const ReplicatorOptions& options)
    : store_(store), self_id_(std::move(self_id)), options_(options), handled_(std::move(baseline)) {
  thread_ = std::thread([this] { Loop(); });
}

Replicator::~Replicator() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void Replicator::OnView(std::shared_ptr<const MemberView> view) {
  absl::MutexLock lock(&mu_);
  pending_ = std::move(view);
}

bool Replicator::AwaitIdle(absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return pending_ == nullptr && !busy_; };
  return mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
}

ReplicatorStats Replicator::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

void Replicator::Loop() {
  while (true) {
    std::shared_ptr<const MemberView> before;
    std::shared_ptr<const MemberView> after;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
        return stop_ || pending_ != nullptr;
      };
      mu_.Await(absl::Condition(&ready));
      if (stop_) return;
      before = handled_;
      after = std::move(pending_);
      pending_ = nullptr;
      busy_ = true;
    }
    Handle(*before, *after);
    absl::MutexLock lock(&mu_);
    handled_ = std::move(after);
    busy_ = false;
  }
}

Replicator::Sends Replicator::Plan(const MemberView& before, const MemberView& after,
                                   const std::vector<store::HeldPage>& pages,
                                   bool draining) const {
  const std::set<std::string> up_after = UpIds(after);
  const placement::Placement old_placement(before.members);
  const placement::Placement new_placement(after.members);
  std::set<std::string> known;
  for (const v1::Member& m : after.members) known.insert(m.id());
  Sends sends;
  for (const store::HeldPage& page : pages) {
    const std::vector<std::string> old_owners =
        OwnerIds(old_placement, page.key.hash, options_.replicas);
    if (!Contains(old_owners, self_id_)) continue;
    // A draining node sends every page it owned; otherwise the best-ranked
    // former owner still up sends.
    if (!draining) {
      const auto sender = std::find_if(old_owners.begin(), old_owners.end(),
                                       [&](const auto& id) { return up_after.contains(id); });
      if (sender == old_owners.end() || *sender != self_id_) continue;
    }
    for (const std::string& id : OwnerIds(new_placement, page.key.hash, options_.replicas)) {
      if (!Contains(old_owners, id) && known.contains(id)) {
        sends[{id, page.key.tenant}].push_back(page);
      }
    }
  }
  return sends;
}

void Replicator::Handle(const MemberView& before, const MemberView& after) {
  const std::set<std::string> up_after = UpIds(after);
  if (UpIds(before) == up_after) return;
  const v1::Member* self = after.Find(self_id_);
  const bool draining = self != nullptr && self->state() == v1::MEMBER_DRAINING;
  std::map<std::string, const v1::Member*> members;
  for (const v1::Member& m : after.members) members[m.id()] = &m;

  const std::vector<store::HeldPage> held = store_->HeldPages(/*pinned_only=*/!draining);
  const Sends sends = Plan(before, after, held, draining);
  size_t copies = 0;
  for (const auto& [target, pages] : sends) copies += pages.size();
  KVTIER_LOG(INFO) << "replication round: up members " << up_after.size()
                   << (draining ? " (draining: every page)" : " (pinned pages)")
                   << " pages_considered=" << held.size() << " copies_to_make=" << copies;
  for (const auto& [target, pages] : sends) {
    for (size_t i = 0; i < pages.size(); i += options_.batch_pages) {
      const size_t n = std::min<size_t>(options_.batch_pages, pages.size() - i);
      Copy(*members[target.first], target.second, absl::MakeConstSpan(pages).subspan(i, n));
    }
  }
  {
    absl::MutexLock lock(&mu_);
    ++stats_.rounds;
  }
  if (draining || options_.unpinned_bytes_per_s == 0) return;
  std::vector<store::HeldPage> unpinned = store_->HeldPages(/*pinned_only=*/false);
  std::erase_if(unpinned, [](const store::HeldPage& page) { return page.pin_expiry_ms != 0; });
  CopyUnpinned(after, Plan(before, after, unpinned, /*draining=*/false));
}

void Replicator::CopyUnpinned(const MemberView& after, const Sends& sends) {
  std::map<std::string, const v1::Member*> members;
  for (const v1::Member& m : after.members) members[m.id()] = &m;
  size_t copies = 0;
  for (const auto& [target, pages] : sends) copies += pages.size();
  if (copies == 0) return;
  KVTIER_LOG(INFO) << "moving unpinned pages to their new owners in the background copies="
                   << copies << " bytes_per_s=" << options_.unpinned_bytes_per_s;
  auto superseded = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    return stop_ || pending_ != nullptr;
  };
  const absl::Time start = absl::Now();
  uint64_t bytes = 0;
  for (const auto& [target, pages] : sends) {
    for (size_t i = 0; i < pages.size(); i += options_.batch_pages) {
      {
        // Paced: wait until the bytes sent so far are due, unless a newer
        // view (or the end) comes first.
        const absl::Time due =
            start + absl::Seconds(static_cast<double>(bytes) /
                                  static_cast<double>(options_.unpinned_bytes_per_s));
        absl::MutexLock lock(&mu_);
        if (mu_.AwaitWithDeadline(absl::Condition(&superseded), due)) {
          ++stats_.passes_cut_short;
          KVTIER_LOG(INFO) << "background copies cut short by a newer view";
          return;
        }
      }
      const size_t n = std::min<size_t>(options_.batch_pages, pages.size() - i);
      bytes += Copy(*members.at(target.first), target.second,
                    absl::MakeConstSpan(pages).subspan(i, n), /*unpinned=*/true);
    }
  }
  KVTIER_LOG(INFO) << "background copies done bytes=" << bytes
                   << " seconds=" << absl::ToDoubleSeconds(absl::Now() - start);
}

uint64_t Replicator::Copy(const v1::Member& to, uint64_t tenant,
                          absl::Span<const store::HeldPage> pages, bool unpinned) {
  std::vector<PageKey> keys;
  keys.reserve(pages.size());
  for (const store::HeldPage& page : pages) keys.push_back(page.key);
  absl::StatusOr<std::vector<store::GetResult>> got = store_->BatchGet(keys);
  v1::ReplicaPutRequest request;
  request.set_tenant(tenant);
  uint64_t bytes = 0;
  for (size_t i = 0; got.ok() && i < pages.size(); ++i) {
    const store::GetResult& result = (*got)[i];
    if (!result.status.ok()) continue;  // deleted or lost meanwhile: a failure
    bytes += result.data.size();
    v1::PutPage* page = request.add_pages();
    v1::KeyToProto(keys[i], page->mutable_key());
    v1::LayoutToProto(result.layout, page->mutable_layout());
    page->set_checksum(result.checksum);
    page->set_inline_data(result.data);
    request.add_pin_expiry_unix_ms(pages[i].pin_expiry_ms);
  }
  absl::Status status = got.status();
  if (status.ok() && request.pages_size() > 0) {
    status = options_.send(to, request);
  }
  const uint64_t sent = status.ok() ? static_cast<uint64_t>(request.pages_size()) : 0;
  if (!status.ok()) {
    KVTIER_LOG(WARNING) << "cannot copy " << pages.size() << " pages to member " << to.id()
                        << ": " << status;
  }
  absl::MutexLock lock(&mu_);
  stats_.pages_copied += sent;
  if (unpinned) stats_.unpinned_pages_copied += sent;
  stats_.copy_failures += pages.size() - sent;
  return status.ok() ? bytes : 0;
}

}  // namespace kvtier::cluster
