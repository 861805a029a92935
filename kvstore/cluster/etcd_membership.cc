#include "kvstore/cluster/etcd_membership.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/absl_cycle_clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "google/protobuf/util/message_differencer.h"

namespace kvtier::cluster {
namespace {

// Between watch attempts while etcd is away.
constexpr absl::Duration kMinBackoff = absl::Milliseconds(100);
constexpr absl::Duration kMaxBackoff = absl::Seconds(2);
// Leave's LeaseRevoke: the lease expires on its own anyway.
constexpr absl::Duration kRevokeTimeout = absl::Seconds(1);

bool SameMembers(const std::vector<v1::Member>& a, const std::vector<v1::Member>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!google::protobuf::util::MessageDifferencer::Equals(a[i], b[i])) return false;
  }
  return true;
}

}  // namespace

absl::Status ValidateEtcdMembershipOptions(const EtcdMembershipOptions& options) {
  if (options.endpoints.empty()) {
    return absl::InvalidArgumentError("etcd membership: endpoints must name at least one");
  }
  for (const std::string& endpoint : options.endpoints) {
    if (endpoint.empty())
      return absl::InvalidArgumentError("etcd membership: an endpoint is empty");
  }
  if (options.prefix.empty() || options.prefix.front() != '/' || options.prefix.back() != '/') {
    return absl::InvalidArgumentError(absl::StrCat("etcd membership: prefix \"",
                                                   absl::CEscape(options.prefix),
                                                   "\" must start and end with '/'"));
  }
  if (options.lease_ttl < absl::Seconds(2) || options.lease_ttl > absl::Seconds(300) ||
      options.lease_ttl != absl::Seconds(absl::ToInt64Seconds(options.lease_ttl))) {
    return absl::InvalidArgumentError(absl::StrCat("etcd membership: lease_ttl ",
                                                   absl::FormatDuration(options.lease_ttl),
                                                   " must be whole seconds in [2s, 300s]"));
  }
  if (options.connect_timeout <= absl::ZeroDuration() ||
      options.connect_timeout == absl::InfiniteDuration()) {
    return absl::InvalidArgumentError(absl::StrCat("etcd membership: connect_timeout ",
                                                   absl::FormatDuration(options.connect_timeout),
                                                   " must be positive and finite"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Membership>> StartEtcdMembership(
    const EtcdMembershipOptions& options, v1::Member self) {
  RETURN_IF_ERROR(ValidateEtcdMembershipOptions(options));
  RETURN_IF_ERROR(ValidateMember(self));
  if (!IsSelfState(self.state())) {
    return absl::InvalidArgumentError(absl::StrCat("etcd membership: cannot register in state ",
                                                   v1::MemberState_Name(self.state())));
  }
  InitAbslCycleClock();  // before the first connect: common/absl_cycle_clock.h
  ASSIGN_OR_RETURN(
      std::unique_ptr<EtcdClient> client,
      EtcdClient::Connect(options.endpoints, options.connect_timeout, options.connect_timeout));
  ASSIGN_OR_RETURN(const int64_t lease_id,
                   client->LeaseGrant(absl::ToInt64Seconds(options.lease_ttl)));
  absl::StatusOr<int64_t> put =
      client->Put(options.prefix + self.id(), self.SerializeAsString(), lease_id);
  absl::StatusOr<EtcdRange> range = put.ok() ? client->RangePrefix(options.prefix) : put.status();
  if (!range.ok()) {
    // Best effort: the lease expires on its own.
    client->LeaseRevoke(lease_id, kRevokeTimeout).IgnoreError();
    return range.status();
  }
  return std::make_unique<EtcdMembership>(options, std::move(self), std::move(client), lease_id,
                                          *range);
}

EtcdMembership::EtcdMembership(const EtcdMembershipOptions& options, v1::Member self,
                               std::unique_ptr<EtcdClient> client, int64_t lease_id,
                               const EtcdRange& range)
    : self_id_(self.id()),
      prefix_(options.prefix),
      self_key_(options.prefix + self.id()),
      lease_ttl_s_(absl::ToInt64Seconds(options.lease_ttl)),
      call_timeout_(options.connect_timeout),
      client_(std::move(client)),
      self_(std::move(self)),
      view_(std::make_shared<MemberView>()),
      lease_id_(lease_id) {
  ApplyRange(range);
  keep_alive_thread_ = std::thread(&EtcdMembership::KeepAliveLoop, this);
  watch_thread_ = std::thread(&EtcdMembership::WatchLoop, this, range.revision);
}

EtcdMembership::~EtcdMembership() { Leave(); }

std::shared_ptr<const MemberView> EtcdMembership::View() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

absl::Status EtcdMembership::SetSelfState(v1::MemberState state) {
  if (!IsSelfState(state)) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot set own state to ", v1::MemberState_Name(state)));
  }
  int64_t revision = 0;
  {
    absl::MutexLock publish(&publish_mu_);
    if (leaving()) return absl::FailedPreconditionError("membership was left");
    v1::Member record = self_;
    record.set_state(state);
    const int64_t lease = lease_id();
    absl::StatusOr<int64_t> put = client_->Put(self_key_, record.SerializeAsString(), lease);
    if (!put.ok() && put.status().code() == absl::StatusCode::kNotFound) {
      // The lease expired before the keep-alive thread noticed.
      put = Register(record, lease);
    }
    if (!put.ok()) return put.status();
    self_ = std::move(record);
    revision = *put;
  }
  return AwaitRevision(revision);
}

void EtcdMembership::SetListener(Listener listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = std::move(listener);
}

void EtcdMembership::Leave() {
  absl::call_once(leave_once_, [this] {
    {
      absl::MutexLock lock(&mu_);
      leaving_ = true;
      changed_.SignalAll();
    }
    client_->Shutdown();
    if (keep_alive_thread_.joinable()) keep_alive_thread_.join();
    if (watch_thread_.joinable()) watch_thread_.join();
    absl::Status revoked = client_->LeaseRevoke(lease_id(), kRevokeTimeout);
    if (!revoked.ok()) {
      KVTIER_LOG(WARNING) << "etcd membership: leaving without revoking the lease (it expires"
                          << " within its TTL): " << revoked;
    }
  });
}

absl::StatusOr<int64_t> EtcdMembership::Register(const v1::Member& record, int64_t stale_lease_id) {
  if (lease_id() != stale_lease_id) return 0;
  ASSIGN_OR_RETURN(const int64_t new_lease_id, client_->LeaseGrant(lease_ttl_s_));
  absl::StatusOr<int64_t> put = client_->Put(self_key_, record.SerializeAsString(), new_lease_id);
  if (!put.ok()) {
    // Best effort: an unused lease expires on its own.
    client_->LeaseRevoke(new_lease_id, kRevokeTimeout).IgnoreError();
    return put.status();
  }
  absl::MutexLock lock(&mu_);
  lease_id_ = new_lease_id;
  return *put;
}

void EtcdMembership::KeepAliveLoop() {
  const absl::Duration interval = absl::Seconds(lease_ttl_s_) / 3;
  bool registered = true;
  bool failing = false;  // logs once per outage
  while (SleepUnlessLeaving(interval)) {
    const int64_t lease = lease_id();
    absl::Status status;
    if (registered) {
      absl::StatusOr<int64_t> ttl_s = client_->LeaseKeepAlive(lease, interval);
      if (!ttl_s.ok()) {
        status = ttl_s.status();
      } else if (*ttl_s <= 0) {
        KVTIER_LOG(WARNING) << "etcd membership: lease of " << self_id_
                            << " expired; registering again";
        registered = false;
      }
    }
    if (!registered) {
      absl::MutexLock publish(&publish_mu_);
      absl::StatusOr<int64_t> put = Register(self_, lease);
      registered = put.ok();
      status = put.status();
    }
    if (status.ok()) {
      if (failing) {
        KVTIER_LOG(INFO) << "etcd membership: keep-alive of " << self_id_ << " recovered";
      }
      failing = false;
    } else if (!failing && !leaving()) {
      KVTIER_LOG(WARNING) << "etcd membership: keep-alive of " << self_id_ << " failed: " << status;
      failing = true;
    }
  }
}

void EtcdMembership::WatchLoop(int64_t start_revision) {
  absl::Duration backoff = kMinBackoff;
  int64_t revision = start_revision;
  bool read = true;      // records_ is current as of `revision`
  bool failing = false;  // logs once per outage
  while (!leaving()) {
    if (!read) {
      absl::StatusOr<EtcdRange> range = client_->RangePrefix(prefix_);
      if (!range.ok()) {
        if (!failing && !leaving()) {
          KVTIER_LOG(WARNING) << "etcd membership: " << range.status();
        }
        failing = true;
        if (!SleepUnlessLeaving(backoff)) break;
        backoff = std::min(backoff * 2, kMaxBackoff);
        continue;
      }
      ApplyRange(*range);
      revision = range->revision;
      if (failing) {
        KVTIER_LOG(INFO) << "etcd membership: watching again at revision " << revision;
      }
      failing = false;
    }
    read = false;
    absl::Status ended =
        client_->WatchPrefix(prefix_, revision + 1, [this, &backoff](const EtcdWatchBatch& batch) {
          backoff = kMinBackoff;
          ApplyBatch(batch);
        });
    if (leaving()) break;
    KVTIER_LOG(WARNING) << "etcd membership: " << ended << "; reading " << prefix_ << " again";
    if (!SleepUnlessLeaving(backoff)) break;
    backoff = std::min(backoff * 2, kMaxBackoff);
  }
}

std::optional<v1::Member> EtcdMembership::Decode(const EtcdKeyValue& kv) const {
  const std::string key = absl::CEscape(kv.key);
  v1::Member member;
  absl::Status valid;
  if (!absl::StartsWith(kv.key, prefix_)) {
    valid = absl::InvalidArgumentError("outside the prefix");
  } else if (!member.ParseFromString(kv.value)) {
    valid = absl::InvalidArgumentError("not a kvtier.v1.Member");
  } else {
    valid = ValidateMember(member);
    if (valid.ok() && kv.key != prefix_ + member.id()) {
      valid = absl::InvalidArgumentError(
          absl::StrCat("the key does not end with the record's id ", member.id()));
    }
  }
  if (valid.ok()) return member;
  KVTIER_LOG(WARNING) << "etcd membership: skipping the record at " << key << ": " << valid;
  return std::nullopt;
}

void EtcdMembership::ApplyRange(const EtcdRange& range) {
  std::map<std::string, v1::Member> next;
  for (const EtcdKeyValue& kv : range.kvs) {
    std::optional<v1::Member> member = Decode(kv);
    if (member.has_value()) next[member->id()] = *std::move(member);
  }
  // Members that vanished while the watch was down stay, as DOWN.
  for (const auto& [id, member] : records_) {
    if (next.contains(id)) continue;
    v1::Member down = member;
    down.set_state(v1::MEMBER_DOWN);
    next.emplace(id, std::move(down));
  }
  records_ = std::move(next);
  Publish(range.revision);
}

void EtcdMembership::ApplyBatch(const EtcdWatchBatch& batch) {
  int64_t revision = batch.revision;
  for (const EtcdEvent& event : batch.events) {
    revision = std::max(revision, event.kv.mod_revision);
    if (!event.is_delete) {
      std::optional<v1::Member> member = Decode(event.kv);
      if (member.has_value()) records_[member->id()] = *std::move(member);
      continue;
    }
    if (!absl::StartsWith(event.kv.key, prefix_)) continue;
    auto it = records_.find(event.kv.key.substr(prefix_.size()));
    if (it != records_.end()) it->second.set_state(v1::MEMBER_DOWN);
  }
  Publish(revision);
}

void EtcdMembership::Publish(int64_t revision) {
  auto view = std::make_shared<MemberView>();
  view->revision = revision;
  for (const auto& [id, member] : records_) view->members.push_back(member);
  bool changed = false;
  {
    absl::MutexLock lock(&mu_);
    applied_revision_ = std::max(applied_revision_, revision);
    changed = !SameMembers(view_->members, view->members);
    if (changed) view_ = view;
    changed_.SignalAll();
  }
  if (!changed) return;
  absl::MutexLock lock(&listener_mu_);
  if (listener_) listener_(std::move(view));
}

absl::Status EtcdMembership::AwaitRevision(int64_t revision) {
  const absl::Time deadline = absl::Now() + call_timeout_;
  absl::MutexLock lock(&mu_);
  while (applied_revision_ < revision && !leaving_) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) break;  // timed out
  }
  if (applied_revision_ >= revision) return absl::OkStatus();
  if (leaving_) return absl::FailedPreconditionError("membership was left");
  return absl::DeadlineExceededError(absl::StrCat(
      "etcd stored the record of ", self_id_, " at revision ", revision,
      " but the watch has not delivered it within ", absl::FormatDuration(call_timeout_)));
}

bool EtcdMembership::SleepUnlessLeaving(absl::Duration duration) {
  const absl::Time deadline = absl::Now() + duration;
  absl::MutexLock lock(&mu_);
  while (!leaving_) {
    if (changed_.WaitWithDeadline(&mu_, deadline)) break;  // timed out
  }
  return !leaving_;
}

int64_t EtcdMembership::lease_id() const {
  absl::MutexLock lock(&mu_);
  return lease_id_;
}

bool EtcdMembership::leaving() const {
  absl::MutexLock lock(&mu_);
  return leaving_;
}

}  // namespace kvtier::cluster
