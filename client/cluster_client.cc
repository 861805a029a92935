#include "client/cluster_client.h"
#include "client/cluster_client_internal.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "placement/placement.h"
#include "common/status_macros.h"

namespace kvtier::client {

using cluster_internal::FailsOver;
using cluster_internal::Groups;
using cluster_internal::RunEach;
using cluster_internal::WithMember;

namespace {

constexpr absl::Duration kMinRefreshInterval = absl::Milliseconds(100);

// A Members reply is another process's word: ids of 1..64 printable
// characters, unique, and an address for each.
absl::Status CheckMembersReply(const v1::MembersResponse& reply) {
  absl::flat_hash_set<std::string> ids;
  for (const v1::Member& member : reply.members()) {
    if (member.id().empty() || member.id().size() > 64 || member.address().empty() ||
        member.address().size() > 255) {
      return absl::InvalidArgumentError("a member without a valid id or address");
    }
    if (!ids.insert(member.id()).second) {
      return absl::InvalidArgumentError(absl::StrCat("member ", member.id(), " listed twice"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

ClientOptions ClusterOptions::DefaultMemberOptions() {
  ClientOptions options;
  options.deadline_ms = 5000;
  options.max_attempts = 2;
  return options;
}

absl::Status ClusterOptions::Validate() const {
  RETURN_IF_ERROR(client.Validate());
  if (replicas < 1 || replicas > 16) {
    return absl::InvalidArgumentError(absl::StrCat("replicas ", replicas, ": must be 1..16"));
  }
  if (write_quorum < 1 || write_quorum > replicas) {
    return absl::InvalidArgumentError(
        absl::StrCat("write_quorum ", write_quorum, ": must be 1..replicas (", replicas, ")"));
  }
  if (repair_window_ms < 0 || repair_window_ms > 86'400'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("repair_window_ms ", repair_window_ms, ": must be 0..86400000"));
  }
  if (view_refresh_ms < 10 || view_refresh_ms > 3'600'000) {
    return absl::InvalidArgumentError(
        absl::StrCat("view_refresh_ms ", view_refresh_ms, ": must be 10..3600000"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<ClusterClient>> ClusterClient::Connect(
    const std::vector<std::string>& seeds, const ClusterOptions& options) {
  RETURN_IF_ERROR(options.Validate());
  if (seeds.empty()) return absl::InvalidArgumentError("no seed address");
  std::unique_ptr<ClusterClient> client(new ClusterClient(options, seeds));
  RETURN_IF_ERROR(client->RefreshView());
  client->refresher_ = std::thread([c = client.get()] { c->RefreshLoop(); });
  return client;
}

ClusterClient::ClusterClient(const ClusterOptions& options, std::vector<std::string> seeds)
    : options_(options), seeds_(std::move(seeds)) {}

ClusterClient::~ClusterClient() {
  stop_.Notify();
  if (refresher_.joinable()) refresher_.join();
}

void ClusterClient::RefreshLoop() {
  while (!stop_.WaitForNotificationWithTimeout(absl::Milliseconds(options_.view_refresh_ms))) {
    // A failed refresh keeps the view; the next one tries again.
    RefreshView().IgnoreError();
  }
}

std::shared_ptr<const ClusterClient::View> ClusterClient::CurrentView() const {
  absl::MutexLock lock(&mu_);
  return view_;
}

v1::MembersResponse ClusterClient::view() const { return CurrentView()->response; }

absl::StatusOr<std::shared_ptr<StoreClient>> ClusterClient::ClientFor(const v1::Member& member) {
  {
    absl::MutexLock lock(&mu_);
    auto it = clients_.find(member.id());
    if (it != clients_.end() && it->second->target() == member.address()) return it->second;
  }
  ASSIGN_OR_RETURN(std::unique_ptr<StoreClient> made,
                   StoreClient::Connect(member.address(), options_.client));
  std::shared_ptr<StoreClient> client = std::move(made);
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = clients_.try_emplace(member.id(), client);
  if (!inserted && it->second->target() != member.address()) it->second = client;
  return it->second;
}

absl::StatusOr<std::shared_ptr<StoreClient>> ClusterClient::member(const std::string& id) {
  const std::shared_ptr<const View> view = CurrentView();
  const v1::Member* found = view->Find(id);
  if (found == nullptr) return absl::NotFoundError(absl::StrCat("no member ", id, " in the view"));
  return ClientFor(*found);
}

absl::Status ClusterClient::RefreshView() {
  // The members of the current view first (up ones before the rest), then
  // the seeds.
  std::vector<v1::Member> asked;
  if (const std::shared_ptr<const View> view = CurrentView(); view != nullptr) {
    for (const v1::Member& member : view->members) {
      if (member.state() == v1::MEMBER_UP) asked.push_back(member);
    }
    for (const v1::Member& member : view->members) {
      if (member.state() == v1::MEMBER_DRAINING || member.state() == v1::MEMBER_JOINING) {
        asked.push_back(member);
      }
    }
  }
  for (const std::string& seed : seeds_) {
    v1::Member member;
    member.set_id(absl::StrCat("seed:", seed));
    member.set_address(seed);
    asked.push_back(std::move(member));
  }
  absl::Status last = absl::UnavailableError("no member or seed to ask");
  for (const v1::Member& member : asked) {
    absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(member);
    absl::StatusOr<v1::MembersResponse> reply =
        client.ok() ? (*client)->Members() : absl::StatusOr<v1::MembersResponse>(client.status());
    if (reply.ok()) {
      if (absl::Status checked = CheckMembersReply(*reply); !checked.ok()) reply = checked;
    }
    if (!reply.ok()) {
      last = WithMember(reply.status(), member);
      continue;
    }
    absl::MutexLock lock(&mu_);
    last_refresh_ = absl::Now();
    if (view_ == nullptr || reply->revision() >= view_->response.revision()) {
      auto next = std::make_shared<const View>(*std::move(reply));
      // A first view with members that are not up (down, draining,
      // joining) counts as a change too: pages may still sit where they
      // were.
      const bool changed = view_ != nullptr ? view_->UpIds() != next->UpIds()
                                            : next->UpIds().size() != next->members.size();
      if (changed) up_changed_ = absl::Now();
      view_ = std::move(next);
    }
    return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat("no member answered Members; last: ", last.message()));
}

void ClusterClient::RefreshSoon() {
  {
    absl::MutexLock lock(&mu_);
    if (absl::Now() - last_refresh_ < kMinRefreshInterval) return;
    last_refresh_ = absl::Now();
  }
  RefreshView().IgnoreError();
}

absl::StatusOr<std::vector<PutOutcome>> ClusterClient::BatchPut(absl::Span<const PutPage> pages) {
  if (pages.empty()) return absl::InvalidArgumentError("BatchPut of no page");
  const std::shared_ptr<const View> view = CurrentView();
  const size_t up = view->placement.size();
  if (up == 0) return absl::UnavailableError("no member is up");
  const size_t need = std::min<size_t>(options_.write_quorum, up);
  const size_t copies = std::min<size_t>(options_.replicas, up);

  std::vector<std::vector<size_t>> ranking(pages.size());
  std::vector<size_t> assigned(pages.size(), 0);  // ranking entries tried
  std::vector<size_t> acks(pages.size(), 0);
  std::vector<PutOutcome> outcomes(pages.size());
  std::vector<bool> failed(up, false);
  absl::Status last_failure = absl::OkStatus();

  // Round one: each page to its R owners; later rounds: to the next members
  // of its ranking, as many as it still lacks.
  std::vector<std::vector<size_t>> by_member(up);
  for (size_t i = 0; i < pages.size(); ++i) {
    ranking[i] = view->placement.Owners(pages[i].key.hash, up, options_.prefer_member_id);
    for (; assigned[i] < copies; ++assigned[i]) by_member[ranking[i][assigned[i]]].push_back(i);
  }
  while (true) {
    std::vector<size_t> targets;
    for (size_t m = 0; m < up; ++m) {
      if (!by_member[m].empty()) targets.push_back(m);
    }
    if (targets.empty()) break;
    std::vector<absl::StatusOr<std::vector<PutOutcome>>> results(
        targets.size(), absl::UnknownError("not sent"));
    RunEach(targets.size(), [&](size_t t) {
      const size_t m = targets[t];
      std::vector<PutPage> subset;
      subset.reserve(by_member[m].size());
      for (size_t i : by_member[m]) subset.push_back(pages[i]);
      absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(view->placement.member(m));
      results[t] = client.ok() ? (*client)->BatchPut(subset)
                               : absl::StatusOr<std::vector<PutOutcome>>(client.status());
    });
    std::vector<size_t> lacking;
    for (size_t t = 0; t < targets.size(); ++t) {
      const size_t m = targets[t];
      const v1::Member& member = view->placement.member(m);
      if (!results[t].ok()) {
        if (!FailsOver(results[t].status())) return WithMember(results[t].status(), member);
        failed[m] = true;
        failovers_.fetch_add(1, std::memory_order_relaxed);
        last_failure = WithMember(results[t].status(), member);
        for (size_t i : by_member[m]) lacking.push_back(i);
      } else {
        for (size_t k = 0; k < by_member[m].size(); ++k) {
          const size_t i = by_member[m][k];
          if (acks[i]++ == 0) outcomes[i] = (*results[t])[k];
        }
      }
      by_member[m].clear();
    }
    if (lacking.empty()) break;
    RefreshSoon();
    std::sort(lacking.begin(), lacking.end());
    lacking.erase(std::unique(lacking.begin(), lacking.end()), lacking.end());
    for (size_t i : lacking) {
      if (acks[i] >= need) continue;
      // Copies this page still needs beyond those in flight (none are).
      size_t wanted = need - acks[i];
      while (wanted > 0 && assigned[i] < up) {
        const size_t m = ranking[i][assigned[i]++];
        if (failed[m]) continue;
        by_member[m].push_back(i);
        --wanted;
      }
    }
  }
  for (size_t i = 0; i < pages.size(); ++i) {
    if (acks[i] < need) {
      return absl::UnavailableError(absl::StrCat("page ", i, " stored on ", acks[i], " of the ",
                                                 need, " members it needs; ",
                                                 last_failure.message()));
    }
  }
  return outcomes;
}

absl::StatusOr<std::vector<GotPage>> ClusterClient::BatchGet(absl::Span<const PageKey> keys,
                                                             uint64_t page_bytes_hint) {
  if (keys.empty()) return std::vector<GotPage>();
  const std::shared_ptr<const View> view = CurrentView();
  std::vector<std::vector<const v1::Member*>> candidates(keys.size());
  std::vector<size_t> next(keys.size(), 0);
  std::vector<GotPage> got(keys.size());
  std::vector<bool> done(keys.size(), false);
  std::vector<bool> answered(keys.size(), false);
  // Owners (up, among the key's R) that answered that they lack the key.
  std::vector<std::vector<const v1::Member*>> lacking(keys.size());
  absl::flat_hash_set<std::string> failed;
  absl::Status last_failure = absl::UnavailableError("no member holds these pages");
  const size_t owners = std::min<size_t>(options_.replicas, view->placement.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    candidates[i] = view->Candidates(keys[i].hash, options_.replicas, {}, true);
    got[i].key = keys[i];
    got[i].status = v1::PAGE_STATUS_NOT_FOUND;
  }
  while (true) {
    Groups groups;
    for (size_t i = 0; i < keys.size(); ++i) {
      if (done[i]) continue;
      while (next[i] < candidates[i].size() && failed.contains(candidates[i][next[i]]->id())) {
        ++next[i];
      }
      if (next[i] < candidates[i].size()) groups.Add(candidates[i][next[i]], i);
    }
    if (groups.members.empty()) break;
    std::vector<absl::StatusOr<std::vector<GotPage>>> results(
        groups.members.size(), absl::UnknownError("not sent"));
    RunEach(groups.members.size(), [&](size_t g) {
      std::vector<PageKey> subset;
      subset.reserve(groups.items[g].size());
      for (size_t i : groups.items[g]) subset.push_back(keys[i]);
      absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(*groups.members[g]);
      results[g] = client.ok() ? (*client)->BatchGet(subset, page_bytes_hint)
                               : absl::StatusOr<std::vector<GotPage>>(client.status());
    });
    bool any_failed = false;
    for (size_t g = 0; g < groups.members.size(); ++g) {
      const v1::Member& member = *groups.members[g];
      if (!results[g].ok()) {
        RETURN_IF_ERROR(NoteFailure(results[g].status(), member, &failed, &last_failure));
        any_failed = true;
        continue;
      }
      for (size_t k = 0; k < groups.items[g].size(); ++k) {
        const size_t i = groups.items[g][k];
        GotPage& page = (*results[g])[k];
        answered[i] = true;
        const bool is_owner = next[i] < owners;
        ++next[i];
        if (page.status == v1::PAGE_STATUS_OK) {
          got[i] = std::move(page);
          done[i] = true;
        } else {
          if (page.status == v1::PAGE_STATUS_LOST) got[i].status = v1::PAGE_STATUS_LOST;
          if (is_owner) lacking[i].push_back(&member);
        }
      }
    }
    if (any_failed) RefreshSoon();
  }
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!done[i] && !answered[i]) {
      return absl::UnavailableError(
          absl::StrCat("key ", i, ": no member that may hold it answered; ",
                       last_failure.message()));
    }
    if (!done[i] || !options_.read_repair) lacking[i].clear();
  }
  if (options_.read_repair && InRepairWindow()) {
    std::vector<std::vector<const v1::Member*>> unasked(keys.size());
    for (size_t i = 0; i < keys.size(); ++i) {
      if (!done[i]) continue;
      for (size_t c = next[i]; c < owners && c < candidates[i].size(); ++c) {
        if (!failed.contains(candidates[i][c]->id())) unasked[i].push_back(candidates[i][c]);
      }
    }
    std::vector<PageKey> found_keys;
    found_keys.reserve(got.size());
    for (const GotPage& page : got) found_keys.push_back(page.key);
    Probe(found_keys, unasked, nullptr, &lacking);
  }
  Repair(got, lacking);
  return got;
}

absl::Status ClusterClient::NoteFailure(const absl::Status& status, const v1::Member& member,
                                        absl::flat_hash_set<std::string>* failed,
                                        absl::Status* last_failure) {
  if (!FailsOver(status)) return WithMember(status, member);
  failed->insert(member.id());
  failovers_.fetch_add(1, std::memory_order_relaxed);
  *last_failure = WithMember(status, member);
  return absl::OkStatus();
}

bool ClusterClient::InRepairWindow() const {
  absl::MutexLock lock(&mu_);
  return absl::Now() - up_changed_ < absl::Milliseconds(options_.repair_window_ms);
}

void ClusterClient::Probe(absl::Span<const PageKey> keys,
                          const std::vector<std::vector<const v1::Member*>>& asked,
                          std::vector<std::vector<const v1::Member*>>* holding,
                          std::vector<std::vector<const v1::Member*>>* lacking) {
  // One Lookup per (member, layer): it answers for a chain of hashes and
  // one layer range.
  struct Question {
    const v1::Member* member;
    uint32_t layer;
    std::vector<size_t> items;
  };
  std::vector<Question> questions;
  for (size_t i = 0; i < keys.size(); ++i) {
    for (const v1::Member* member : asked[i]) {
      auto it = std::find_if(questions.begin(), questions.end(), [&](const Question& q) {
        return q.member->id() == member->id() && q.layer == keys[i].layer;
      });
      if (it == questions.end()) {
        questions.push_back(Question{member, keys[i].layer, {}});
        it = questions.end() - 1;
      }
      it->items.push_back(i);
    }
  }
  if (questions.empty()) return;
  std::vector<absl::StatusOr<LookupReply>> results(questions.size(),
                                                   absl::UnknownError("not sent"));
  RunEach(questions.size(), [&](size_t q) {
    std::vector<Hash128> chain;
    for (size_t i : questions[q].items) chain.push_back(keys[i].hash);
    absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(*questions[q].member);
    results[q] = client.ok() ? (*client)->Lookup(chain, questions[q].layer, 1)
                             : absl::StatusOr<LookupReply>(client.status());
  });
  for (size_t q = 0; q < questions.size(); ++q) {
    if (!results[q].ok() || results[q]->tiers.size() != questions[q].items.size()) continue;
    for (size_t k = 0; k < questions[q].items.size(); ++k) {
      auto* out = results[q]->tiers[k] == v1::TIER_NONE ? lacking : holding;
      if (out != nullptr) (*out)[questions[q].items[k]].push_back(questions[q].member);
    }
  }
}

void ClusterClient::Repair(const std::vector<GotPage>& pages,
                           const std::vector<std::vector<const v1::Member*>>& repair) {
  Groups groups;
  for (size_t i = 0; i < pages.size(); ++i) {
    for (const v1::Member* member : repair[i]) groups.Add(member, i);
  }
  if (groups.members.empty()) return;
  RunEach(groups.members.size(), [&](size_t g) {
    std::vector<PutPage> put;
    put.reserve(groups.items[g].size());
    for (size_t i : groups.items[g]) {
      put.push_back(PutPage{.key = pages[i].key,
                            .layout = pages[i].layout,
                            .data = {reinterpret_cast<const uint8_t*>(pages[i].data.data()),
                                     pages[i].data.size()}});
    }
    absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(*groups.members[g]);
    const bool stored = client.ok() && (*client)->BatchPut(put).ok();
    (stored ? repaired_pages_ : repair_failures_)
        .fetch_add(put.size(), std::memory_order_relaxed);
  });
}

ClusterStats ClusterClient::stats() const {
  return ClusterStats{.failovers = failovers_.load(std::memory_order_relaxed),
                      .repaired_pages = repaired_pages_.load(std::memory_order_relaxed),
                      .repair_failures = repair_failures_.load(std::memory_order_relaxed)};
}

absl::StatusOr<ClusterLookupReply> ClusterClient::Lookup(absl::Span<const Hash128> chain,
                                                         uint32_t layer_begin,
                                                         uint32_t layer_count) {
  if (layer_count == 0) layer_count = 1;
  const std::shared_ptr<const View> view = CurrentView();
  const size_t n = chain.size();
  std::vector<std::vector<const v1::Member*>> candidates(n);
  std::vector<size_t> next(n, 0);
  std::vector<bool> answered(n, false);
  ClusterLookupReply reply;
  reply.holders.resize(n);
  absl::flat_hash_set<std::string> failed;
  absl::Status last_failure = absl::UnavailableError("no member to ask");
  for (size_t i = 0; i < n; ++i) {
    candidates[i] = view->Candidates(chain[i], options_.replicas, {}, true);
  }
  while (true) {
    // Only pages before the first one that no member can have matter.
    Groups groups;
    for (size_t i = 0; i < n; ++i) {
      if (!reply.holders[i].empty()) continue;
      while (next[i] < candidates[i].size() && failed.contains(candidates[i][next[i]]->id())) {
        ++next[i];
      }
      if (next[i] >= candidates[i].size()) break;
      groups.Add(candidates[i][next[i]], i);
    }
    if (groups.members.empty()) break;
    std::vector<absl::StatusOr<LookupReply>> results(groups.members.size(),
                                                     absl::UnknownError("not sent"));
    RunEach(groups.members.size(), [&](size_t g) {
      std::vector<Hash128> subset;
      subset.reserve(groups.items[g].size());
      for (size_t i : groups.items[g]) subset.push_back(chain[i]);
      absl::StatusOr<std::shared_ptr<StoreClient>> client = ClientFor(*groups.members[g]);
      results[g] = client.ok() ? (*client)->Lookup(subset, layer_begin, layer_count)
                               : absl::StatusOr<LookupReply>(client.status());
    });
    bool any_failed = false;
    for (size_t g = 0; g < groups.members.size(); ++g) {
      const v1::Member& member = *groups.members[g];
      if (results[g].ok() && results[g]->tiers.size() != groups.items[g].size() * layer_count) {
        results[g] = absl::InternalError("Lookup answered for another number of pages");
      }
      if (!results[g].ok()) {
        RETURN_IF_ERROR(NoteFailure(results[g].status(), member, &failed, &last_failure));
        any_failed = true;
        continue;
      }
      for (size_t k = 0; k < groups.items[g].size(); ++k) {
        const size_t i = groups.items[g][k];
        answered[i] = true;
        ++next[i];
        const auto first = results[g]->tiers.begin() + static_cast<std::ptrdiff_t>(k * layer_count);
        if (std::all_of(first, first + layer_count,
                        [](v1::Tier tier) { return tier != v1::TIER_NONE; })) {
          reply.holders[i] = member.id();
        }
      }
    }
    if (any_failed) RefreshSoon();
  }
  while (reply.prefix_pages < n && !reply.holders[reply.prefix_pages].empty()) {
    ++reply.prefix_pages;
  }
  if (reply.prefix_pages < n && !answered[reply.prefix_pages]) {
    return absl::UnavailableError(absl::StrCat("chain page ", reply.prefix_pages,
                                               ": no member that may hold it answered; ",
                                               last_failure.message()));
  }
  return reply;
}

}  // namespace kvtier::client
