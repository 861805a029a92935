// kvtierctl's cluster commands: members, cluster-put, cluster-get, route,
// events and drain.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cache_event_view.h"
#include "client/cluster_client.h"
#include "client/prefix_router.h"
#include "client/security_flags.h"
#include "common/status_macros.h"
#include "ops/kvtierctl.h"

namespace kvtier::ops {

// members: the cluster's member view as the target holds it.
absl::Status PrintMembers(client::StoreClient& client) {
  ASSIGN_OR_RETURN(v1::MembersResponse view, client.Members());
  std::printf("members of %s (node %s, revision %lld)\n", absl::GetFlag(FLAGS_target).c_str(),
              view.self_id().c_str(), static_cast<long long>(view.revision()));
  for (const v1::Member& m : view.members()) {
    std::printf("  %-16s %-22s %-16s ram %-10s disk %s\n", m.id().c_str(), m.address().c_str(),
                v1::MemberState_Name(m.state()).c_str(), HumanBytes(m.ram_capacity_bytes()).c_str(),
                HumanBytes(m.disk_capacity_bytes()).c_str());
  }
  return absl::OkStatus();
}

namespace {

absl::StatusOr<std::unique_ptr<client::ClusterClient>> ConnectClusterFromFlags() {
  client::ClusterOptions options;
  client::ApplySecurityFlags(&options.client);
  options.client.deadline_ms = std::min<int64_t>(absl::GetFlag(FLAGS_deadline_ms), 5000);
  options.client.max_batch_pages = absl::GetFlag(FLAGS_batch_pages);
  options.replicas = absl::GetFlag(FLAGS_replicas);
  options.write_quorum = absl::GetFlag(FLAGS_write_quorum);
  return client::ClusterClient::Connect({absl::GetFlag(FLAGS_target)}, options);
}

// Every (page, layer) of the prompt's chain, with synthetic bytes.
struct PromptPages {
  std::vector<Hash128> chain;
  std::vector<PageKey> keys;
  std::vector<std::string> bytes;
};

absl::StatusOr<PromptPages> PromptPagesFromFlags(const PageLayout& layout) {
  ASSIGN_OR_RETURN(std::vector<uint32_t> tokens, TokensFromFlags());
  PromptPages pages;
  pages.chain = KeyChain::Chain(SeedFromFlags(layout), tokens, layout.page_size);
  if (pages.chain.empty()) return absl::InvalidArgumentError("the prompt is less than one page");
  for (const Hash128& h : pages.chain) {
    for (uint32_t l = 0; l < absl::GetFlag(FLAGS_layers); ++l) {
      pages.keys.push_back({.hash = h, .layer = l});
      pages.bytes.push_back(DemoPageBytes(layout, pages.keys.back()));
    }
  }
  return pages;
}

// "node-0 12, node-1 20": pages per holder.
std::string CountByHolder(const std::vector<std::string>& holders) {
  std::map<std::string, int> counts;
  for (const std::string& h : holders) {
    if (!h.empty()) ++counts[h];
  }
  std::string out;
  for (const auto& [id, n] : counts) absl::StrAppend(&out, out.empty() ? "" : ", ", id, " ", n);
  return out.empty() ? "none" : out;
}

}  // namespace

// cluster-put: stores every (page, layer) of the prompt on its owners.
absl::Status ClusterPut() {
  ASSIGN_OR_RETURN(const PageLayout layout, LayoutFromFlags());
  ASSIGN_OR_RETURN(const PromptPages pages, PromptPagesFromFlags(layout));
  ASSIGN_OR_RETURN(std::unique_ptr<client::ClusterClient> cluster, ConnectClusterFromFlags());
  std::vector<client::PutPage> put;
  for (size_t i = 0; i < pages.keys.size(); ++i) {
    put.push_back({.key = pages.keys[i], .layout = layout,
                   .data = {reinterpret_cast<const uint8_t*>(pages.bytes[i].data()),
                            pages.bytes[i].size()}});
  }
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(std::vector<client::PutOutcome> outcomes, cluster->BatchPut(put));
  size_t present = 0;
  for (const client::PutOutcome& o : outcomes) present += o.already_present;
  ASSIGN_OR_RETURN(client::ClusterLookupReply found,
                   cluster->Lookup(pages.chain, 0, absl::GetFlag(FLAGS_layers)));
  if (const uint64_t ttl_ms = absl::GetFlag(FLAGS_pin_ttl_ms); ttl_ms > 0) {
    ASSIGN_OR_RETURN(const client::ClusterPin pin, cluster->Pin(pages.keys, ttl_ms));
    std::printf("pinned for %llu ms on their owners (%zu member pins)\n",
                static_cast<unsigned long long>(ttl_ms), pin.pins.size());
  }
  std::printf("stored %zu pages x %u layers through %s (%zu already present) in %.1f ms; "
              "owners: %s\n",
              pages.chain.size(), absl::GetFlag(FLAGS_layers),
              absl::GetFlag(FLAGS_target).c_str(), present,
              absl::ToDoubleMilliseconds(absl::Now() - start),
              CountByHolder(found.holders).c_str());
  return absl::OkStatus();
}

// cluster-get: the longest stored prefix anywhere in the cluster, where its
// pages live, and its bytes fetched and verified.
absl::Status ClusterGet() {
  ASSIGN_OR_RETURN(const PageLayout layout, LayoutFromFlags());
  ASSIGN_OR_RETURN(const PromptPages pages, PromptPagesFromFlags(layout));
  ASSIGN_OR_RETURN(std::unique_ptr<client::ClusterClient> cluster, ConnectClusterFromFlags());
  const uint32_t layers = absl::GetFlag(FLAGS_layers);
  const absl::Time start = absl::Now();
  ASSIGN_OR_RETURN(client::ClusterLookupReply found, cluster->Lookup(pages.chain, 0, layers));
  const double lookup_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  const std::vector<PageKey> keys(pages.keys.begin(),
                                  pages.keys.begin() + size_t{found.prefix_pages} * layers);
  size_t verified = 0;
  if (!keys.empty()) {
    ASSIGN_OR_RETURN(std::vector<client::GotPage> got, cluster->BatchGet(keys));
    for (size_t i = 0; i < got.size(); ++i) {
      if (got[i].status != v1::PAGE_STATUS_OK || got[i].data != pages.bytes[i]) {
        return absl::DataLossError(absl::StrCat("page ", i / layers, " layer ", i % layers,
                                                " came back wrong or missing"));
      }
      ++verified;
    }
  }
  const client::ClusterStats stats = cluster->stats();
  std::printf("prefix %u of %zu pages found through %s in %.1f ms; held by: %s; %zu page-layers "
              "fetched and verified; %llu failovers; %llu page-layers copied to owners that "
              "lacked them\n",
              found.prefix_pages, pages.chain.size(), absl::GetFlag(FLAGS_target).c_str(),
              lookup_ms, CountByHolder(found.holders).c_str(), verified,
              static_cast<unsigned long long>(stats.failovers),
              static_cast<unsigned long long>(stats.repaired_pages));
  return absl::OkStatus();
}

// route: what each member holds of the prompt, as a router following
// their cache event streams sees it.
absl::Status Route() {
  ASSIGN_OR_RETURN(const PageLayout layout, LayoutFromFlags());
  ASSIGN_OR_RETURN(const std::vector<uint32_t> tokens, TokensFromFlags());
  const std::vector<Hash128> chain = KeyChain::Chain(SeedFromFlags(layout), tokens,
                                                     layout.page_size);
  if (chain.empty()) return absl::InvalidArgumentError("the prompt is less than one page");
  const int32_t layer = absl::GetFlag(FLAGS_layer);
  ASSIGN_OR_RETURN(std::unique_ptr<client::ClusterClient> cluster, ConnectClusterFromFlags());
  client::PrefixRouter router(
      cluster.get(), client::PrefixRouterOptions{.layer = static_cast<uint32_t>(std::max(layer, 0)),
                                                 .member_poll = absl::Seconds(1),
                                                 .retry_interval = absl::Milliseconds(500)});
  const absl::Time start = absl::Now();
  if (!router.AwaitSynced(absl::Milliseconds(absl::GetFlag(FLAGS_deadline_ms)))) {
    return absl::DeadlineExceededError("not every member sent its snapshot in time");
  }
  const double sync_ms = absl::ToDoubleMilliseconds(absl::Now() - start);
  const client::PrefixRouterStats stats = router.stats();
  const std::vector<client::NodePrefix> where = router.Locate(chain);
  std::printf("%zu pages of %u tokens; %u members followed, snapshots in %.1f ms\n", chain.size(),
              layout.page_size, stats.members, sync_ms);
  if (where.empty()) std::printf("  no member holds its first page\n");
  for (const client::NodePrefix& p : where) {
    std::printf("  %-16s holds the first %u of %zu pages\n", p.node_id.c_str(), p.prefix_pages,
                chain.size());
  }
  return absl::OkStatus();
}

// events: the target's cache event stream, as text.
absl::Status PrintEvents(client::StoreClient& client) {
  const int32_t layer = absl::GetFlag(FLAGS_layer);
  if (layer < -1) return absl::InvalidArgumentError("--layer: -1 (every layer) or a layer");
  client::NodePageView view;
  v1::WatchCacheEventsRequest request =
      view.ResumeRequest(layer < 0 ? std::nullopt : std::optional<uint32_t>(layer));
  std::unique_ptr<client::CacheEventStream> stream = client.WatchCacheEvents(request);
  // Ends the stream when the time is up, or when no batch comes at all.
  const absl::Duration follow = absl::Seconds(absl::GetFlag(FLAGS_follow_s));
  absl::Notification snapshot_done;
  absl::Notification finished;
  std::thread timer([&] {
    const bool synced = snapshot_done.WaitForNotificationWithTimeout(
        absl::Milliseconds(absl::GetFlag(FLAGS_deadline_ms)));
    if (!synced || !finished.WaitForNotificationWithTimeout(follow)) stream->Cancel();
  });
  absl::Status status;
  bool synced = false;
  v1::CacheEventBatch batch;
  while (stream->Next(&batch)) {
    if (absl::Status applied = view.Apply(batch); !applied.ok()) {
      status = applied;
      break;
    }
    if (batch.snapshot_done()) {
      std::printf("node %s holds %zu pages%s of this tenant (epoch %016llx, cursor %llu)\n",
                  view.node_id().c_str(), view.pages(),
                  layer < 0 ? "" : absl::StrCat(" of layer ", layer).c_str(),
                  static_cast<unsigned long long>(view.epoch()),
                  static_cast<unsigned long long>(view.next_seq()));
      std::fflush(stdout);
      synced = true;
      // Only this thread notifies; a later reset sends another snapshot.
      if (!snapshot_done.HasBeenNotified()) snapshot_done.Notify();
      if (follow == absl::ZeroDuration()) break;
      continue;
    }
    if (!view.synced()) continue;
    for (const v1::CacheEvent& event : batch.events()) {
      std::printf("  %-7s %s layer %u\n",
                  event.kind() == v1::CacheEvent::STORED ? "stored" : "removed",
                  absl::BytesToHexString(event.key().hash()).c_str(), event.key().layer());
    }
    std::fflush(stdout);
  }
  finished.Notify();
  if (!snapshot_done.HasBeenNotified()) snapshot_done.Notify();
  timer.join();
  stream->Cancel();
  const absl::Status ended = stream->Finish();
  RETURN_IF_ERROR(status);
  if (!ended.ok() && !absl::IsCancelled(ended)) return ended;
  if (!synced) {
    return absl::DeadlineExceededError("no snapshot from the target within --deadline_ms");
  }
  return absl::OkStatus();
}

// drain: the target hands its pages to their new owners and leaves
// placement; waits --wait_s for the hand-off.
absl::Status DrainTarget(client::StoreClient& client) {
  const uint32_t wait_s = absl::GetFlag(FLAGS_wait_s);
  ASSIGN_OR_RETURN(const v1::DrainResponse drained, client.Drain(wait_s));
  std::printf("node %s is draining: %s; %llu copies made, %llu failed\n",
              drained.node_id().c_str(),
              drained.handed_off() ? "every page it owned is with its new owners"
                                   : absl::StrCat("hand-off still running after ", wait_s, " s")
                                         .c_str(),
              static_cast<unsigned long long>(drained.pages_copied()),
              static_cast<unsigned long long>(drained.copy_failures()));
  return drained.handed_off()
             ? absl::OkStatus()
             : absl::DeadlineExceededError("the hand-off has not finished; run drain again");
}

}  // namespace kvtier::ops
