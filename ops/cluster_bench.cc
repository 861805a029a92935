// kvtier-cluster-bench: throughput of a kvtier cluster through
// ClusterClients, and the latency of a cross-node prefix Lookup.
//
//   kvtier-cluster-bench --seeds 127.0.0.1:50051 --clients 4 --replicas 2
//
// Each client is one ClusterClient on its own thread.
//   put:    --duration_ms of BatchPuts of --batch_pages new pages of
//           --page_bytes (R copies each, acknowledged after W). GB/s counts
//           the bytes clients put; copies/s per node counts the copies the
//           members stored, divided by the members up.
//   get:    --duration_ms of BatchGets of random pages from those put.
//   lookup: --lookup_reps Lookups of one stored chain of --lookup_chain
//           pages (one layer) spread over the members; p50 and p99.
//   route:  a PrefixRouter following every member's cache event stream:
//           how long its snapshots of everything stored so far take; the
//           latency of its in-memory Locate of the same chain (beside the
//           Lookup's); and, over --route_reps puts of a fresh 16-page
//           prompt, the time from the put's acknowledgement until Locate
//           finds the whole prompt (the events' lag; p50 and p99).
// The pages put are deleted from every member at the end. Progress to
// stderr; one JSON object to stdout (or --json FILE).
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cluster_client.h"
#include "client/prefix_router.h"
#include "client/security_flags.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "common/status_macros.h"
#include "common/tool_usage.h"
#include "ops/percentile.h"

ABSL_FLAG(std::string, seeds, "127.0.0.1:50051", "Members to read the view from, host:port,...");
ABSL_FLAG(int, clients, 4, "Concurrent ClusterClients");
ABSL_FLAG(uint64_t, page_bytes, 65536, "Bytes per page (f16, 16 tokens, head_dim 128)");
ABSL_FLAG(uint32_t, batch_pages, 8, "Pages per BatchPut/BatchGet");
ABSL_FLAG(int64_t, duration_ms, 3000, "Length of the put and of the get phase, ms");
ABSL_FLAG(uint64_t, max_put_bytes, uint64_t{256} << 20,
          "Most bytes all clients put (before copies), so the RAM tiers are measured");
ABSL_FLAG(uint32_t, replicas, 2, "Copies of each page (R)");
ABSL_FLAG(uint32_t, write_quorum, 2, "Copies stored before a put succeeds (W)");
ABSL_FLAG(uint32_t, lookup_chain, 4096, "Pages of the looked-up chain");
ABSL_FLAG(int, lookup_reps, 50, "Lookups of the chain");
ABSL_FLAG(int, route_reps, 50, "Prompts put to measure the router's lag (0: no route phase)");
ABSL_FLAG(std::string, json, "", "Write the JSON result here instead of stdout");

namespace kvtier::ops {
namespace {

absl::StatusOr<PageLayout> LayoutOf(uint64_t page_bytes) {
  // 2 (K, V) x 16 tokens x heads x 128 x 2 bytes = page_bytes.
  const uint64_t per_head = 2 * 16 * 128 * 2;
  if (page_bytes % per_head != 0 || page_bytes / per_head == 0 || page_bytes / per_head > 256) {
    return absl::InvalidArgumentError(
        absl::StrCat("--page_bytes ", page_bytes, ": must be a multiple of 8192 up to 2 MiB"));
  }
  PageLayout layout{.page_size = 16,
                    .n_kv_heads = static_cast<uint32_t>(page_bytes / per_head),
                    .head_dim = 128,
                    .dtype = DType::kF16};
  RETURN_IF_ERROR(layout.Validate());
  return layout;
}

struct Phase {
  double seconds = 0;
  uint64_t pages = 0;
  std::vector<double> latencies_us;
};

absl::Status Run() {
  ASSIGN_OR_RETURN(const PageLayout layout, LayoutOf(absl::GetFlag(FLAGS_page_bytes)));
  const int n_clients = absl::GetFlag(FLAGS_clients);
  if (n_clients < 1 || n_clients > 256) return absl::InvalidArgumentError("--clients: 1..256");
  const uint32_t batch = std::max<uint32_t>(1, absl::GetFlag(FLAGS_batch_pages));
  client::ClusterOptions options;
  client::ApplySecurityFlags(&options.client);
  options.replicas = absl::GetFlag(FLAGS_replicas);
  options.write_quorum = absl::GetFlag(FLAGS_write_quorum);
  const std::vector<std::string> seeds =
      absl::StrSplit(absl::GetFlag(FLAGS_seeds), ',', absl::SkipEmpty());
  std::vector<std::unique_ptr<client::ClusterClient>> clients;
  for (int c = 0; c < n_clients; ++c) {
    ASSIGN_OR_RETURN(std::unique_ptr<client::ClusterClient> cluster,
                     client::ClusterClient::Connect(seeds, options));
    clients.push_back(std::move(cluster));
  }
  const v1::MembersResponse view = clients[0]->view();
  int up = 0;
  for (const v1::Member& m : view.members()) up += m.state() == v1::MEMBER_UP;
  const uint32_t copies = std::min<uint32_t>(options.replicas, static_cast<uint32_t>(up));
  std::fprintf(stderr, "%d members up, %u copies per page, %d clients, pages of %llu bytes\n", up,
               copies, n_clients, static_cast<unsigned long long>(layout.PageBytes()));

  std::mt19937_64 gen(std::random_device{}());
  const uint64_t nonce = gen();
  std::string data(layout.PageBytes(), '\0');
  for (char& ch : data) ch = static_cast<char>(gen());
  const uint64_t budget_pages =
      absl::GetFlag(FLAGS_max_put_bytes) / layout.PageBytes() / static_cast<uint64_t>(n_clients);
  auto key_of = [&](int c, uint64_t i) {
    return PageKey{.hash = {.hi = nonce ^ (uint64_t(c) << 48), .lo = i}, .layer = 0};
  };

  // Runs op(client index, iteration) on every client for the duration; op
  // returns the pages it did (0: done).
  auto run_phase = [&](auto op) -> absl::StatusOr<Phase> {
    std::vector<Phase> per(n_clients);
    std::vector<absl::Status> status(n_clients);
    std::vector<std::thread> threads;
    const absl::Time start = absl::Now();
    const absl::Time deadline = start + absl::Milliseconds(absl::GetFlag(FLAGS_duration_ms));
    for (int c = 0; c < n_clients; ++c) {
      threads.emplace_back([&, c] {
        for (uint64_t i = 0; absl::Now() < deadline; ++i) {
          const absl::Time t0 = absl::Now();
          absl::StatusOr<uint64_t> done = op(c, i);
          if (!done.ok()) {
            status[c] = done.status();
            return;
          }
          if (*done == 0) return;
          per[c].latencies_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
          per[c].pages += *done;
        }
      });
    }
    for (std::thread& t : threads) t.join();
    Phase all;
    all.seconds = absl::ToDoubleSeconds(absl::Now() - start);
    for (int c = 0; c < n_clients; ++c) {
      RETURN_IF_ERROR(status[c]);
      all.pages += per[c].pages;
      all.latencies_us.insert(all.latencies_us.end(), per[c].latencies_us.begin(),
                              per[c].latencies_us.end());
    }
    return all;
  };

  std::vector<uint64_t> put_count(n_clients, 0);
  ASSIGN_OR_RETURN(const Phase put, run_phase([&](int c, uint64_t) -> absl::StatusOr<uint64_t> {
    if (put_count[c] + batch > budget_pages) return 0;
    std::vector<client::PutPage> pages;
    for (uint32_t j = 0; j < batch; ++j) {
      pages.push_back({.key = key_of(c, put_count[c] + j), .layout = layout,
                       .data = {reinterpret_cast<const uint8_t*>(data.data()), data.size()}});
    }
    RETURN_IF_ERROR(clients[c]->BatchPut(pages).status());
    put_count[c] += batch;
    return batch;
  }));
  ASSIGN_OR_RETURN(const Phase get, run_phase([&](int c, uint64_t i) -> absl::StatusOr<uint64_t> {
    if (put_count[c] == 0) return 0;
    std::vector<PageKey> keys;
    for (uint32_t j = 0; j < batch; ++j) {
      keys.push_back(key_of(c, (i * batch + j) * 7919 % put_count[c]));
    }
    ASSIGN_OR_RETURN(std::vector<client::GotPage> got,
                     clients[c]->BatchGet(keys, layout.PageBytes()));
    for (const client::GotPage& page : got) {
      if (page.status != v1::PAGE_STATUS_OK || page.data != data) {
        return absl::DataLossError("a page came back wrong or missing");
      }
    }
    return batch;
  }));

  // The lookup chain: one layer of small pages, stored once.
  const uint32_t chain_pages = absl::GetFlag(FLAGS_lookup_chain);
  std::vector<Hash128> chain;
  std::vector<client::PutPage> chain_put;
  const PageLayout small{.page_size = 16, .n_kv_heads = 1, .head_dim = 8, .dtype = DType::kF16};
  const std::string small_data(small.PageBytes(), 'k');
  for (uint32_t p = 0; p < chain_pages; ++p) {
    chain.push_back(Hash128{.hi = nonce ^ 0xC4A1Cull, .lo = p});
    chain_put.push_back({.key = {.hash = chain.back(), .layer = 0}, .layout = small,
                         .data = {reinterpret_cast<const uint8_t*>(small_data.data()),
                                  small_data.size()}});
  }
  if (!chain.empty()) RETURN_IF_ERROR(clients[0]->BatchPut(chain_put).status());
  std::vector<double> lookup_us;
  for (int r = 0; r < absl::GetFlag(FLAGS_lookup_reps) && !chain.empty(); ++r) {
    const absl::Time t0 = absl::Now();
    ASSIGN_OR_RETURN(client::ClusterLookupReply found, clients[0]->Lookup(chain));
    lookup_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
    if (found.prefix_pages != chain_pages) {
      return absl::DataLossError(absl::StrCat("lookup found ", found.prefix_pages, " of ",
                                              chain_pages, " pages"));
    }
  }

  // The router: snapshots, Locate, and the lag of its events.
  std::vector<double> locate_us;
  std::vector<double> lag_us;
  double sync_ms = 0;
  std::vector<Hash128> route_hashes;
  if (const int reps = absl::GetFlag(FLAGS_route_reps); reps > 0) {
    const absl::Time t0 = absl::Now();
    client::PrefixRouter router(clients[0].get(), client::PrefixRouterOptions{});
    if (!router.AwaitSynced(absl::Seconds(60))) {
      return absl::DeadlineExceededError("the router did not sync within 60 s");
    }
    sync_ms = absl::ToDoubleMilliseconds(absl::Now() - t0);
    for (int r = 0; r < absl::GetFlag(FLAGS_lookup_reps) && !chain.empty(); ++r) {
      const absl::Time t1 = absl::Now();
      const std::vector<client::NodePrefix> where = router.Locate(chain);
      locate_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t1));
      if (where.empty()) return absl::DataLossError("the router found no member with the chain");
    }
    for (int r = 0; r < reps; ++r) {
      std::vector<Hash128> prompt;
      std::vector<client::PutPage> prompt_put;
      for (uint32_t p = 0; p < 16; ++p) {
        prompt.push_back(Hash128{.hi = nonce ^ 0x7007eull, .lo = uint64_t(r) * 16 + p});
        route_hashes.push_back(prompt.back());
        prompt_put.push_back({.key = {.hash = prompt.back(), .layer = 0}, .layout = small,
                              .data = {reinterpret_cast<const uint8_t*>(small_data.data()),
                                       small_data.size()}});
      }
      RETURN_IF_ERROR(clients[0]->BatchPut(prompt_put).status());
      const absl::Time acked = absl::Now();
      const absl::Time deadline = acked + absl::Seconds(10);
      // The prompt's owners vary by page, so "found" means every page is
      // known somewhere: the first page's best member has some prefix, and
      // each page is held by a member the router follows.
      while (true) {
        bool all = true;
        for (uint32_t p = 0; p < prompt.size() && all; ++p) {
          all = !router.Locate({prompt.data() + p, 1}).empty();
        }
        if (all) break;
        if (absl::Now() > deadline) {
          return absl::DeadlineExceededError("the router did not learn a prompt within 10 s");
        }
        absl::SleepFor(absl::Microseconds(100));
      }
      lag_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - acked));
    }
  }

  // Clean up on every member (a page's copies may sit anywhere).
  std::vector<PageKey> all_keys;
  for (const Hash128& h : route_hashes) all_keys.push_back({.hash = h, .layer = 0});
  for (int c = 0; c < n_clients; ++c) {
    for (uint64_t i = 0; i < put_count[c]; ++i) all_keys.push_back(key_of(c, i));
  }
  for (const Hash128& h : chain) all_keys.push_back({.hash = h, .layer = 0});
  for (const v1::Member& m : view.members()) {
    if (m.state() != v1::MEMBER_UP) continue;
    ASSIGN_OR_RETURN(std::shared_ptr<client::StoreClient> member, clients[0]->member(m.id()));
    for (size_t i = 0; i < all_keys.size(); i += 1024) {
      const size_t n = std::min<size_t>(1024, all_keys.size() - i);
      RETURN_IF_ERROR(member->Delete({all_keys.data() + i, n}, /*force=*/true).status());
    }
  }

  const double page_bytes = static_cast<double>(layout.PageBytes());
  const double put_gbps = static_cast<double>(put.pages) * page_bytes / put.seconds / 1e9;
  const double get_gbps = static_cast<double>(get.pages) * page_bytes / get.seconds / 1e9;
  const double copies_per_node_s =
      static_cast<double>(put.pages) * copies / put.seconds / std::max(1, up);
  const double gets_per_node_s = static_cast<double>(get.pages) / get.seconds / std::max(1, up);
  std::fprintf(stderr,
               "put %.3f GB/s (%.0f pages/s, %.0f copies/s per member, p99 %.0f us)\n"
               "get %.3f GB/s (%.0f pages/s, %.0f pages/s per member, p99 %.0f us)\n"
               "lookup of %u pages: p50 %.0f us, p99 %.0f us\n"
               "router: snapshots %.1f ms, locate p50 %.1f us p99 %.1f us, event lag p50 "
               "%.0f us p99 %.0f us\n",
               put_gbps, static_cast<double>(put.pages) / put.seconds, copies_per_node_s,
               Percentile(put.latencies_us, 0.99), get_gbps,
               static_cast<double>(get.pages) / get.seconds, gets_per_node_s,
               Percentile(get.latencies_us, 0.99), chain_pages, Percentile(lookup_us, 0.5),
               Percentile(lookup_us, 0.99), sync_ms, Percentile(locate_us, 0.5),
               Percentile(locate_us, 0.99), Percentile(lag_us, 0.5), Percentile(lag_us, 0.99));
  const std::string json = absl::StrFormat(
      "{\"members_up\": %d, \"replicas\": %u, \"write_quorum\": %u, \"clients\": %d, "
      "\"page_bytes\": %d, \"batch_pages\": %u, \"put_gbps\": %.4f, \"put_pages_per_s\": %.1f, "
      "\"put_copies_per_member_per_s\": %.1f, \"put_p50_us\": %.1f, \"put_p99_us\": %.1f, "
      "\"get_gbps\": %.4f, \"get_pages_per_s\": %.1f, \"get_pages_per_member_per_s\": %.1f, "
      "\"get_p50_us\": %.1f, \"get_p99_us\": %.1f, \"lookup_chain\": %u, "
      "\"lookup_p50_us\": %.1f, \"lookup_p99_us\": %.1f, \"router_sync_ms\": %.1f, "
      "\"locate_p50_us\": %.2f, \"locate_p99_us\": %.2f, \"event_lag_p50_us\": %.0f, "
      "\"event_lag_p99_us\": %.0f}\n",
      up, copies, options.write_quorum, n_clients, layout.PageBytes(), batch, put_gbps,
      static_cast<double>(put.pages) / put.seconds, copies_per_node_s,
      Percentile(put.latencies_us, 0.5), Percentile(put.latencies_us, 0.99), get_gbps,
      static_cast<double>(get.pages) / get.seconds, gets_per_node_s,
      Percentile(get.latencies_us, 0.5), Percentile(get.latencies_us, 0.99), chain_pages,
      Percentile(lookup_us, 0.5), Percentile(lookup_us, 0.99), sync_ms,
      Percentile(locate_us, 0.5), Percentile(locate_us, 0.99), Percentile(lag_us, 0.5),
      Percentile(lag_us, 0.99));
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::ofstream out(path, std::ios::trunc);
    out << json;
    if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", path));
  } else {
    std::fputs(json.c_str(), stdout);
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvtier::ops

int main(int argc, char** argv) {
  kvtier::SetToolUsage("kvtier-cluster-bench --seeds HOST:PORT[,..] [--clients N]");
  absl::ParseCommandLine(argc, argv);
  absl::Status s = kvtier::ops::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "kvtier-cluster-bench: %s\n", s.ToString().c_str());
    return absl::IsInvalidArgument(s) ? 2 : 1;
  }
  return 0;
}
