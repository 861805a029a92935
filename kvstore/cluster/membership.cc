#include "kvstore/cluster/membership.h"

#include <algorithm>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"

namespace kvtier::cluster {
namespace {

bool IsIdChar(char c) { return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == '-'; }

// host:port with a non-empty host and a decimal port 1..65535. The last ':'
// splits, so "[::1]:80" passes.
bool IsHostPort(const std::string& address) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  const std::string port = address.substr(colon + 1);
  if (port.empty() || port.size() > 5) return false;
  int value = 0;
  for (char c : port) {
    if (!absl::ascii_isdigit(c)) return false;
    value = value * 10 + (c - '0');
  }
  return value >= 1 && value <= 65535;
}

// The fixed view of StartStaticMembership; only this node's state changes.
//
// Locking: listener_mu_ is held while a view is published and its listener
// runs, so listeners see views in order; mu_ guards the view itself.
class StaticMembership final : public Membership {
 public:
  StaticMembership(std::shared_ptr<const MemberView> view, std::string self_id)
      : self_id_(std::move(self_id)), view_(std::move(view)) {}

  std::shared_ptr<const MemberView> View() const override {
    absl::MutexLock lock(&mu_);
    return view_;
  }

  const std::string& self_id() const override { return self_id_; }

  absl::Status SetSelfState(v1::MemberState state) override {
    if (!IsSelfState(state)) {
      return absl::InvalidArgumentError(
          absl::StrCat("cannot set own state to ", v1::MemberState_Name(state)));
    }
    absl::MutexLock publish(&listener_mu_);
    std::shared_ptr<MemberView> next;
    {
      absl::MutexLock lock(&mu_);
      if (left_) return absl::FailedPreconditionError("membership was left");
      next = std::make_shared<MemberView>(*view_);
      for (v1::Member& member : next->members) {
        if (member.id() == self_id_) member.set_state(state);
      }
      view_ = next;
    }
    if (listener_) listener_(std::move(next));
    return absl::OkStatus();
  }

  void SetListener(Listener listener) override {
    absl::MutexLock lock(&listener_mu_);
    listener_ = std::move(listener);
  }

  void Leave() override {
    absl::MutexLock lock(&mu_);
    left_ = true;
  }

 private:
  // Const after construction.
  const std::string self_id_;

  mutable absl::Mutex listener_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  Listener listener_ ABSL_GUARDED_BY(listener_mu_);

  mutable absl::Mutex mu_;
  std::shared_ptr<const MemberView> view_ ABSL_GUARDED_BY(mu_);
  bool left_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace

const v1::Member* MemberView::Find(const std::string& id) const {
  auto it = std::lower_bound(
      members.begin(), members.end(), id,
      [](const v1::Member& member, const std::string& key) { return member.id() < key; });
  if (it == members.end() || it->id() != id) return nullptr;
  return &*it;
}

absl::Status ValidateMember(const v1::Member& member) {
  const std::string& id = member.id();
  if (id.empty() || id.size() > 64 || !std::all_of(id.begin(), id.end(), IsIdChar)) {
    return absl::InvalidArgumentError(
        absl::StrCat("member id \"", absl::CEscape(id), "\" must be 1..64 of [A-Za-z0-9._-]"));
  }
  const std::string& address = member.address();
  if (address.empty() || address.size() > 255 || !IsHostPort(address)) {
    return absl::InvalidArgumentError(absl::StrCat("member ", id, ": address \"",
                                                   absl::CEscape(address.substr(0, 255)),
                                                   "\" must be host:port, 1..255 bytes"));
  }
  if (member.state() == v1::MEMBER_STATE_UNSPECIFIED || !v1::MemberState_IsValid(member.state())) {
    return absl::InvalidArgumentError(
        absl::StrCat("member ", id, ": state ", static_cast<int>(member.state()),
                     " is not a MemberState other than MEMBER_STATE_UNSPECIFIED"));
  }
  return absl::OkStatus();
}

bool IsSelfState(v1::MemberState state) {
  return state == v1::MEMBER_JOINING || state == v1::MEMBER_UP || state == v1::MEMBER_DRAINING;
}

absl::StatusOr<std::unique_ptr<Membership>> StartStaticMembership(std::vector<v1::Member> members,
                                                                  const std::string& self_id) {
  for (const v1::Member& member : members) {
    absl::Status status = ValidateMember(member);
    if (!status.ok()) return status;
  }
  std::sort(members.begin(), members.end(),
            [](const v1::Member& a, const v1::Member& b) { return a.id() < b.id(); });
  for (size_t i = 1; i < members.size(); ++i) {
    if (members[i].id() == members[i - 1].id()) {
      return absl::InvalidArgumentError(
          absl::StrCat("member id ", members[i].id(), " is listed twice"));
    }
  }
  auto view = std::make_shared<MemberView>();
  view->members = std::move(members);
  if (view->Find(self_id) == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("self id \"", absl::CEscape(self_id), "\" is not among the members"));
  }
  return std::make_unique<StaticMembership>(std::move(view), self_id);
}

}  // namespace kvtier::cluster
