// ClusterClient's pins and deletes: every copy of a key, on every member
// that may hold it.
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/cluster_client.h"
#include "client/cluster_client_internal.h"
#include "common/status_macros.h"

namespace kvtier::client {

using cluster_internal::FailsOver;
using cluster_internal::Groups;
using cluster_internal::RunEach;
using cluster_internal::WithMember;

absl::StatusOr<ClusterPin> ClusterClient::Pin(absl::Span<const PageKey> keys, uint64_t ttl_ms) {
  if (keys.empty()) return absl::InvalidArgumentError("Pin of no key");
  const std::shared_ptr<const View> view = CurrentView();
  std::vector<std::vector<const v1::Member*>> owners(keys.size());
  Groups groups;
  for (size_t i = 0; i < keys.size(); ++i) {
    owners[i] = view->Candidates(keys[i].hash, options_.replicas, {}, false);
    for (const v1::Member* member : owners[i]) groups.Add(member, i);
  }
  ClusterPin made;
  std::vector<bool> pinned(keys.size(), false);
  std::vector<bool> answered(keys.size(), false);
  absl::Mutex made_mu;
  std::vector<absl::Status> errors(groups.members.size());
  RunEach(groups.members.size(), [&](size_t g) {
    const v1::Member& member = *groups.members[g];
    std::vector<PageKey> subset;
    for (size_t i : groups.items[g]) subset.push_back(keys[i]);
    absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(member);
    absl::StatusOr<std::string> pin_id =
        client.ok() ? (*client)->Pin(subset, ttl_ms) : absl::StatusOr<std::string>(client.status());
    std::vector<size_t> done = groups.items[g];
    if (absl::IsNotFound(pin_id.status()) && client.ok()) {
      // The member lacks some of them: pin those it holds.
      std::vector<std::vector<const v1::Member*>> asked(subset.size(), {&member});
      std::vector<std::vector<const v1::Member*>> holding(subset.size());
      Probe(subset, asked, &holding, nullptr);
      std::vector<PageKey> held;
      done.clear();
      for (size_t k = 0; k < subset.size(); ++k) {
        if (!holding[k].empty()) {
          held.push_back(subset[k]);
          done.push_back(groups.items[g][k]);
        }
      }
      pin_id = held.empty() ? absl::StatusOr<std::string>(absl::NotFoundError("none held"))
                            : (*client)->Pin(held, ttl_ms);
    }
    absl::MutexLock lock(&made_mu);
    if (pin_id.ok()) {
      made.pins.push_back({member.id(), *pin_id});
      for (size_t i : done) pinned[i] = true;
    }
    if (pin_id.ok() || absl::IsNotFound(pin_id.status())) {
      for (size_t i : groups.items[g]) answered[i] = true;
    } else if (!FailsOver(pin_id.status())) {
      errors[g] = WithMember(pin_id.status(), member);
    }
  });
  absl::Status failed = absl::OkStatus();
  for (const absl::Status& error : errors) failed.Update(error);
  for (size_t i = 0; failed.ok() && i < keys.size(); ++i) {
    if (pinned[i]) continue;
    failed = answered[i]
                 ? absl::NotFoundError(absl::StrCat("key ", i, " is held by none of its owners"))
                 : absl::UnavailableError(absl::StrCat("key ", i, ": none of its owners answered"));
  }
  if (!failed.ok()) {
    ReleaseQuietly(made);
    return failed;
  }
  return made;
}

void ClusterClient::ReleaseQuietly(const ClusterPin& pins) {
  // Whatever fails here ends with the pin's TTL.
  Unpin(pins).IgnoreError();
}

absl::Status ClusterClient::Unpin(const ClusterPin& pin) {
  const std::shared_ptr<const View> view = CurrentView();
  absl::Status first = absl::OkStatus();
  for (const ClusterPin::MemberPin& member_pin : pin.pins) {
    const v1::Member* member = view->Find(member_pin.member_id);
    if (member == nullptr) continue;  // gone from the view
    absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(*member);
    absl::Status status = client.ok() ? (*client)->Unpin(member_pin.pin_id) : client.status();
    if (!status.ok() && !absl::IsNotFound(status) && !FailsOver(status)) {
      first.Update(WithMember(status, *member));
    }
  }
  return first;
}

absl::StatusOr<uint32_t> ClusterClient::Delete(absl::Span<const PageKey> keys, bool force) {
  if (keys.empty()) return 0u;
  const std::shared_ptr<const View> view = CurrentView();
  Groups groups;
  for (size_t i = 0; i < keys.size(); ++i) {
    for (const v1::Member* member : view->Candidates(keys[i].hash, options_.replicas, {}, true)) {
      groups.Add(member, i);
    }
  }
  std::vector<absl::StatusOr<uint32_t>> results(groups.members.size(),
                                                absl::UnknownError("not sent"));
  RunEach(groups.members.size(), [&](size_t g) {
    std::vector<PageKey> subset;
    for (size_t i : groups.items[g]) subset.push_back(keys[i]);
    absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(*groups.members[g]);
    results[g] = client.ok() ? (*client)->Delete(subset, force)
                             : absl::StatusOr<uint32_t>(client.status());
  });
  uint32_t deleted = 0;
  absl::Status first = absl::OkStatus();
  for (size_t g = 0; g < groups.members.size(); ++g) {
    if (results[g].ok()) {
      deleted += *results[g];
    } else if (!FailsOver(results[g].status())) {
      first.Update(WithMember(results[g].status(), *groups.members[g]));
    }
  }
  if (!first.ok()) return first;
  return deleted;
}

}  // namespace kvtier::client
