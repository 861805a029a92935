// kvtier-bench: put, get and lookup throughput and latency of a running
// kvtier store, over a grid of page sizes x concurrent clients.
//
//   kvtier-bench --target 127.0.0.1:50051 --page_sizes 65536,262144
//                --clients 1,2,4,8 --duration_ms 2000 --json out.json
//
// Each client is one StoreClient (its own connection) on its own thread.
// A cell runs for --duration_ms or --ops RPCs per client, whichever ends
// first. Latency is per RPC (--batch_pages pages each); GB/s counts page
// bytes (1 GB = 1e9 bytes) over the cell's wall time.
//   put:    new content-addressed pages; a cell stops early after
//           --max_put_bytes (default: a third of the server's RAM tier, so
//           that a cell and its warm-up fit) and deletes what it put, so
//           cells do not fill
//           the store for the next ones. An unmeasured round runs first so
//           that the RAM tier's slots are warm.
//   get:    random pages of a working set of --get_working_set_bytes put
//           before the cell (so the RAM tier is measured unless it is
//           smaller than the set).
//   lookup: chains of --lookup_chain keys (half stored); pages/s counts
//           chain entries. Page size does not apply; reported once per
//           client count.
// The store's RAM tier keeps carved slots in their size class, so the
// defaults keep every page size's footprint (put bytes, working set) small
// enough for all four default sizes to fit a 1 GiB RAM tier together.
// Progress goes to stderr, the table to stdout.
#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/store_client.h"
#include "client/security_flags.h"
#include "common/page_key.h"
#include "common/page_layout.h"
#include "common/status_macros.h"
#include "common/tool_usage.h"
#include "ops/percentile.h"

ABSL_FLAG(std::string, target, "127.0.0.1:50051", "Store address host:port");
ABSL_FLAG(std::string, page_sizes, "65536,262144,1048576,4194304", "Page sizes, bytes");
ABSL_FLAG(std::string, clients, "1,2,4,8", "Concurrent client counts");
ABSL_FLAG(std::string, ops_kinds, "put,get,lookup", "Which of put, get, lookup to run");
ABSL_FLAG(int64_t, duration_ms, 2000, "Length of each cell, ms");
ABSL_FLAG(int64_t, ops, 0, "RPCs per client per cell; 0: until --duration_ms");
ABSL_FLAG(uint32_t, batch_pages, 1, "Pages per put/get RPC");
ABSL_FLAG(uint64_t, max_put_bytes, 0,
          "Put bytes after which a put cell stops; 0: a third of the server's RAM tier");
ABSL_FLAG(uint64_t, get_working_set_bytes, uint64_t{64} << 20, "Bytes of the get working set");
ABSL_FLAG(bool, get_into_buffers, false,
          "Gets land in buffers each client allocates once (BatchGet's destinations), as a "
          "worker's staging slots do; otherwise in each page's own data");
ABSL_FLAG(uint32_t, lookup_chain, 4096, "Keys per lookup chain");
ABSL_FLAG(std::string, json, "", "Write the results here as JSON");
ABSL_FLAG(bool, local_lanes, true,
          "Use local lanes where the server offers them (same host, untrusting server)");
ABSL_FLAG(bool, local_direct_transfers, true,
          "Offer the server direct transfers on local lanes (it copies pages straight between "
          "this process's buffers and its store where the kernel allows)");
ABSL_FLAG(bool, local_direct_puts, false,
          "With local_direct_transfers, puts too (the server reads each page where it lies)");
ABSL_FLAG(std::string, ucx_put_mode, "auto",
          "auto (inline bytes where UCX has only TCP; on a mapped arena client_writes for "
          "puts of up to 128 KiB, by message, and of 4 MiB or more, else server_reads), "
          "server_reads (staged, one RPC), "
          "client_writes (ReservePut, put, CommitPut) or "
          "tagged (ReservePut, tagged sends into posted receives, CommitPut)");
ABSL_FLAG(bool, ucx_share_data_plane, true,
          "The clients share one UCX data plane (worker, session, arena mapping); "
          "--noucx_share_data_plane gives each its own");
ABSL_FLAG(bool, ucx, true,
          "Move page bytes over the UCX data plane when the server offers it (UCX_TLS picks "
          "the transport); --noucx sends them inline in gRPC");

namespace kvtier::ops {
namespace {

struct Cell {
  std::string op;
  uint64_t page_bytes = 0;  // 0 for lookup
  int clients = 0;
  uint64_t rpcs = 0;
  uint64_t pages = 0;
  double seconds = 0;
  double p50_us = 0;
  double p99_us = 0;
  double GBps() const { return seconds > 0 ? pages * double(page_bytes) / seconds / 1e9 : 0; }
  double PagesPerSec() const { return seconds > 0 ? pages / seconds : 0; }
};

template <typename T>
absl::StatusOr<std::vector<T>> ParseList(const std::string& text, const char* flag) {
  std::vector<T> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    T v{};
    if (!absl::SimpleAtoi(part, &v) || v <= 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": bad entry \"", part, "\""));
    }
    out.push_back(v);
  }
  if (out.empty()) return absl::InvalidArgumentError(absl::StrCat("--", flag, " is empty"));
  return out;
}

// A bf16 layout with head_dim 128 of exactly `bytes` bytes.
absl::StatusOr<PageLayout> LayoutOfBytes(uint64_t bytes) {
  const uint64_t per_token_head = 2 * 128 * 2;
  if (bytes % per_token_head != 0) {
    return absl::InvalidArgumentError(absl::StrCat("page size ", bytes, " is not a multiple of 512"));
  }
  const uint64_t k = bytes / per_token_head;  // page_size * n_kv_heads
  for (uint32_t page_size = 16; page_size <= PageLayout::kMaxPageSize; page_size *= 2) {
    if (k % page_size == 0 && k / page_size >= 1 && k / page_size <= PageLayout::kMaxKvHeads) {
      PageLayout layout{.page_size = page_size, .n_kv_heads = static_cast<uint32_t>(k / page_size),
                        .head_dim = 128, .dtype = DType::kBF16};
      RETURN_IF_ERROR(layout.Validate());
      return layout;
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("no page layout has ", bytes, " bytes"));
}

// Unique keys: a run nonce, the client index and a counter.
PageKey BenchKey(uint64_t nonce, int client, uint64_t i) {
  return PageKey{.hash = {.hi = nonce ^ (uint64_t(client) << 48), .lo = i}, .layer = 0};
}

struct Worker {
  std::unique_ptr<client::StoreClient> client;
  std::vector<double> latencies_us;
  uint64_t rpcs = 0;
  uint64_t pages = 0;
  absl::Status status;
};

// Runs `op(worker, index, rpc)` on every worker until the deadline or the
// op count; returns the merged cell. `op` returns pages done or an error.
template <typename Op>
absl::StatusOr<Cell> RunCell(std::vector<Worker>& workers, int n, Op op) {
  const int64_t max_ops = absl::GetFlag(FLAGS_ops);
  std::atomic<bool> go{false};
  std::vector<std::thread> threads;
  const absl::Time start_time = absl::Now();
  const absl::Time deadline = start_time + absl::Milliseconds(absl::GetFlag(FLAGS_duration_ms));
  for (int c = 0; c < n; ++c) {
    workers[c].latencies_us.clear();
    workers[c].rpcs = workers[c].pages = 0;
    workers[c].status = absl::OkStatus();
    threads.emplace_back([&, c] {
      Worker& w = workers[c];
      while (!go.load(std::memory_order_acquire)) std::this_thread::yield();
      for (uint64_t i = 0; max_ops == 0 || int64_t(i) < max_ops; ++i) {
        if (max_ops == 0 && absl::Now() >= deadline) break;
        const absl::Time t0 = absl::Now();
        absl::StatusOr<uint64_t> done = op(w, c, i);
        if (!done.ok()) {
          w.status = done.status();
          break;
        }
        if (*done == 0) break;  // the op has nothing more to do
        w.latencies_us.push_back(absl::ToDoubleMicroseconds(absl::Now() - t0));
        ++w.rpcs;
        w.pages += *done;
      }
    });
  }
  const absl::Time t0 = absl::Now();
  go.store(true, std::memory_order_release);
  for (std::thread& t : threads) t.join();
  Cell cell;
  cell.seconds = absl::ToDoubleSeconds(absl::Now() - t0);
  cell.clients = n;
  std::vector<double> all;
  for (int c = 0; c < n; ++c) {
    RETURN_IF_ERROR(workers[c].status);
    cell.rpcs += workers[c].rpcs;
    cell.pages += workers[c].pages;
    all.insert(all.end(), workers[c].latencies_us.begin(), workers[c].latencies_us.end());
  }
  cell.p50_us = Percentile(all, 0.50);
  cell.p99_us = Percentile(all, 0.99);
  return cell;
}

absl::Status DeleteAll(client::StoreClient& client, const std::vector<PageKey>& keys) {
  return client.Delete(keys, /*force=*/true).status();
}

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t x = gen();
    std::memcpy(&out[i], &x, 8);
  }
  return out;
}

absl::StatusOr<Cell> PutRound(std::vector<Worker>& workers, int n, const PageLayout& layout,
                              uint64_t nonce, uint64_t max_put_bytes) {
  const uint32_t batch = absl::GetFlag(FLAGS_batch_pages);
  const uint64_t budget = max_put_bytes / n;
  std::vector<std::string> data(n);
  for (int c = 0; c < n; ++c) data[c] = RandomBytes(layout.PageBytes(), nonce + c);
  ASSIGN_OR_RETURN(Cell cell, RunCell(workers, n, [&](Worker& w, int c, uint64_t i)
                                                      -> absl::StatusOr<uint64_t> {
    if (w.pages * layout.PageBytes() >= budget) return 0;
    std::vector<client::PutPage> pages;
    for (uint32_t j = 0; j < batch; ++j) {
      pages.push_back({.key = BenchKey(nonce, c, i * batch + j), .layout = layout,
                       .data = {reinterpret_cast<const uint8_t*>(data[c].data()),
                                data[c].size()}});
    }
    RETURN_IF_ERROR(w.client->BatchPut(pages).status());
    return batch;
  }));
  for (int c = 0; c < n; ++c) {
    std::vector<PageKey> keys;
    for (uint64_t i = 0; i < workers[c].pages; ++i) keys.push_back(BenchKey(nonce, c, i));
    RETURN_IF_ERROR(DeleteAll(*workers[c].client, keys));
  }
  return cell;
}

// A first, unmeasured round makes the store carve and touch the RAM slots of
// this page size, as a long-running server has; the second round is measured.
absl::StatusOr<Cell> PutCell(std::vector<Worker>& workers, int n, const PageLayout& layout,
                             uint64_t max_put_bytes,
                             uint64_t nonce) {
  RETURN_IF_ERROR(
      PutRound(workers, n, layout, nonce ^ 0x5555555555555555ULL, max_put_bytes).status());
  return PutRound(workers, n, layout, nonce, max_put_bytes);
}

absl::StatusOr<Cell> GetCell(std::vector<Worker>& workers, int n, const PageLayout& layout,
                             uint64_t nonce) {
  const uint32_t batch = absl::GetFlag(FLAGS_batch_pages);
  const uint64_t set_pages = std::max<uint64_t>(
      batch, absl::GetFlag(FLAGS_get_working_set_bytes) / layout.PageBytes());
  const std::string data = RandomBytes(layout.PageBytes(), nonce);
  std::vector<PageKey> keys;
  std::vector<client::PutPage> pages;
  for (uint64_t i = 0; i < set_pages; ++i) {
    keys.push_back(BenchKey(nonce, 255, i));
    pages.push_back({.key = keys.back(), .layout = layout,
                     .data = {reinterpret_cast<const uint8_t*>(data.data()), data.size()}});
  }
  // Filled in small batches so that a put never needs more RAM than it has.
  for (size_t i = 0; i < pages.size(); i += 16) {
    const size_t m = std::min<size_t>(16, pages.size() - i);
    RETURN_IF_ERROR(workers[0].client->BatchPut({pages.data() + i, m}).status());
  }
  std::vector<std::mt19937_64> gens;
  for (int c = 0; c < n; ++c) gens.emplace_back(nonce * 31 + c);
  const bool into_buffers = absl::GetFlag(FLAGS_get_into_buffers);
  std::vector<std::vector<std::string>> buffers(n);
  std::vector<std::vector<absl::Span<uint8_t>>> destinations(n);
  for (int c = 0; c < n && into_buffers; ++c) {
    buffers[c].assign(batch, std::string(layout.PageBytes(), '\0'));
    for (std::string& b : buffers[c]) {
      destinations[c].emplace_back(reinterpret_cast<uint8_t*>(b.data()), b.size());
    }
  }
  absl::StatusOr<Cell> cell = RunCell(workers, n, [&](Worker& w, int c, uint64_t)
                                                      -> absl::StatusOr<uint64_t> {
    std::vector<PageKey> want;
    for (uint32_t j = 0; j < batch; ++j) want.push_back(keys[gens[c]() % keys.size()]);
    ASSIGN_OR_RETURN(std::vector<client::GotPage> got,
                     w.client->BatchGet(want, layout.PageBytes(), destinations[c]));
    for (const client::GotPage& g : got) {
      const uint64_t size = g.in_destination ? layout.PageBytes() : g.data.size();
      if (g.status != v1::PAGE_STATUS_OK || size != layout.PageBytes()) {
        return absl::InternalError(absl::StrCat("get of a working-set page returned ",
                                                v1::PageStatus_Name(g.status)));
      }
    }
    return batch;
  });
  RETURN_IF_ERROR(DeleteAll(*workers[0].client, keys));
  return cell;
}

absl::StatusOr<Cell> LookupCell(std::vector<Worker>& workers, int n, uint64_t nonce) {
  const uint32_t len = absl::GetFlag(FLAGS_lookup_chain);
  const PageLayout small{.page_size = 16, .n_kv_heads = 1, .head_dim = 64};  // 4 KiB
  const std::string data(small.PageBytes(), 'l');
  std::vector<Hash128> chain;
  std::vector<PageKey> stored;
  std::vector<client::PutPage> pages;
  for (uint32_t i = 0; i < len; ++i) {
    chain.push_back(BenchKey(nonce, 254, i).hash);
    if (i < len / 2) {
      stored.push_back({.hash = chain.back(), .layer = 0});
      pages.push_back({.key = stored.back(), .layout = small,
                       .data = {reinterpret_cast<const uint8_t*>(data.data()), data.size()}});
    }
  }
  for (size_t i = 0; i < pages.size(); i += 256) {
    const size_t m = std::min<size_t>(256, pages.size() - i);
    RETURN_IF_ERROR(workers[0].client->BatchPut({pages.data() + i, m}).status());
  }
  absl::StatusOr<Cell> cell = RunCell(workers, n, [&](Worker& w, int, uint64_t)
                                                      -> absl::StatusOr<uint64_t> {
    ASSIGN_OR_RETURN(client::LookupReply r, w.client->Lookup(chain, 0, 1));
    if (r.prefix_pages != len / 2) {
      return absl::InternalError(absl::StrCat("lookup prefix ", r.prefix_pages, ", expected ",
                                              len / 2));
    }
    return len;
  });
  RETURN_IF_ERROR(DeleteAll(*workers[0].client, stored));
  return cell;
}

std::string CellJson(const Cell& c) {
  return absl::StrFormat(
      "{\"op\": \"%s\", \"page_bytes\": %d, \"clients\": %d, \"rpcs\": %d, "
      "\"pages\": %d, \"seconds\": %.6f, \"gbps\": %.6f, \"pages_per_s\": %.1f, "
      "\"p50_us\": %.1f, \"p99_us\": %.1f}",
      c.op, c.page_bytes, c.clients, c.rpcs, c.pages, c.seconds, c.GBps(), c.PagesPerSec(),
      c.p50_us, c.p99_us);
}

void PrintTable(const std::vector<Cell>& cells) {
  std::printf("%-7s %10s %8s %10s %12s %9s %11s %11s\n", "op", "page", "clients", "rpcs",
              "pages/s", "GB/s", "p50 us", "p99 us");
  for (const Cell& c : cells) {
    const std::string page = c.page_bytes == 0 ? "-" : absl::StrCat(c.page_bytes >> 10, " KiB");
    std::printf("%-7s %10s %8d %10llu %12.0f %9.3f %11.1f %11.1f\n", c.op.c_str(), page.c_str(),
                c.clients, static_cast<unsigned long long>(c.rpcs), c.PagesPerSec(), c.GBps(),
                c.p50_us, c.p99_us);
  }
}

absl::Status Run() {
  ASSIGN_OR_RETURN(std::vector<uint64_t> sizes,
                   ParseList<uint64_t>(absl::GetFlag(FLAGS_page_sizes), "page_sizes"));
  ASSIGN_OR_RETURN(std::vector<int> clients, ParseList<int>(absl::GetFlag(FLAGS_clients), "clients"));
  const std::string kinds = absl::GetFlag(FLAGS_ops_kinds);
  const bool do_put = absl::StrContains(kinds, "put");
  const bool do_get = absl::StrContains(kinds, "get");
  const bool do_lookup = absl::StrContains(kinds, "lookup");
  if (absl::GetFlag(FLAGS_batch_pages) == 0) return absl::InvalidArgumentError("--batch_pages is 0");
  if (absl::GetFlag(FLAGS_ops) < 0) return absl::InvalidArgumentError("--ops is negative");
  if (absl::GetFlag(FLAGS_duration_ms) <= 0 && absl::GetFlag(FLAGS_ops) == 0) {
    return absl::InvalidArgumentError("need --duration_ms > 0 or --ops > 0");
  }
  std::vector<PageLayout> layouts;
  for (uint64_t s : sizes) {
    ASSIGN_OR_RETURN(PageLayout l, LayoutOfBytes(s));
    layouts.push_back(l);
  }
  std::vector<Worker> workers(*std::max_element(clients.begin(), clients.end()));
  for (Worker& w : workers) {
    client::ClientOptions options;
    client::ApplySecurityFlags(&options);
    options.use_ucx = absl::GetFlag(FLAGS_ucx);
    options.local_lanes = absl::GetFlag(FLAGS_local_lanes);
    options.local_direct_transfers = absl::GetFlag(FLAGS_local_direct_transfers);
    options.local_direct_puts = absl::GetFlag(FLAGS_local_direct_puts);
    options.ucx_share_data_plane = absl::GetFlag(FLAGS_ucx_share_data_plane);
    const std::string mode = absl::GetFlag(FLAGS_ucx_put_mode);
    if (mode != "auto" && mode != "server_reads" && mode != "client_writes" &&
        mode != "tagged") {
      return absl::InvalidArgumentError(absl::StrCat("--ucx_put_mode ", mode, " is unknown"));
    }
    options.ucx_put_mode = mode == "auto"            ? client::UcxPutMode::kAuto
                           : mode == "server_reads"  ? client::UcxPutMode::kServerReads
                           : mode == "client_writes" ? client::UcxPutMode::kClientWrites
                                                     : client::UcxPutMode::kTagged;
    ASSIGN_OR_RETURN(w.client, client::StoreClient::Connect(absl::GetFlag(FLAGS_target), options));
  }
  // Fails fast if nothing listens. A put cell and its warm-up round must fit
  // the RAM tier together, or the cell would measure eviction.
  ASSIGN_OR_RETURN(v1::StatsResponse stats, workers[0].client->Stats());
  uint64_t max_put_bytes = absl::GetFlag(FLAGS_max_put_bytes);
  if (max_put_bytes == 0) max_put_bytes = stats.ram().capacity_bytes() / 3;
  if (max_put_bytes == 0) return absl::FailedPreconditionError("the server has no RAM tier");

  const uint64_t run_nonce = std::random_device()() * uint64_t{0x9E3779B97F4A7C15};
  const size_t total = (layouts.size() * (do_put + do_get) + do_lookup) * clients.size();
  std::vector<Cell> cells;
  auto record = [&](absl::StatusOr<Cell> cell, const char* op, uint64_t bytes) -> absl::Status {
    RETURN_IF_ERROR(cell.status());
    cell->op = op;
    cell->page_bytes = bytes;
    std::fprintf(stderr, "[%zu/%zu] %-6s page %8llu clients %d: %.3f GB/s, %.0f pages/s, p99 %.0f us\n",
                 cells.size() + 1, total, op, static_cast<unsigned long long>(bytes),
                 cell->clients, cell->GBps(), cell->PagesPerSec(), cell->p99_us);
    cells.push_back(*cell);
    return absl::OkStatus();
  };
  uint64_t nonce = run_nonce;
  for (const PageLayout& layout : layouts) {
    for (int n : clients) {
      if (do_put) {
        RETURN_IF_ERROR(
            record(PutCell(workers, n, layout, max_put_bytes, ++nonce), "put", layout.PageBytes()));
      }
      if (do_get) RETURN_IF_ERROR(record(GetCell(workers, n, layout, ++nonce), "get", layout.PageBytes()));
    }
  }
  if (do_lookup) {
    for (int n : clients) RETURN_IF_ERROR(record(LookupCell(workers, n, ++nonce), "lookup", 0));
  }
  PrintTable(cells);
  // Which path the bytes took: UCX needs both sides to offer it.
  client::DataPlaneStats paths;
  for (const Worker& w : workers) {
    const client::DataPlaneStats d = w.client->data_plane_stats();
    paths.ucx_put_pages += d.ucx_put_pages;
    paths.ucx_get_pages += d.ucx_get_pages;
    paths.inline_put_pages += d.inline_put_pages;
    paths.inline_get_pages += d.inline_get_pages;
    paths.mapped_put_pages += d.mapped_put_pages;
    paths.mapped_get_pages += d.mapped_get_pages;
    paths.mapped_get_retries += d.mapped_get_retries;
    paths.message_puts += d.message_puts;
    paths.message_gets += d.message_gets;
    paths.lane_put_pages += d.lane_put_pages;
    paths.lane_get_pages += d.lane_get_pages;
    paths.lane_direct_put_pages += d.lane_direct_put_pages;
    paths.lane_direct_get_pages += d.lane_direct_get_pages;
  }
  std::fprintf(stderr,
               "pages over UCX: put %llu get %llu (through the mapped arena: put %llu get %llu, "
               "copies read again %llu); as UCX messages: puts %llu gets %llu; "
               "inline: put %llu get %llu; through local lanes: put %llu get %llu (directly: "
               "put %llu get %llu)\n",
               static_cast<unsigned long long>(paths.ucx_put_pages),
               static_cast<unsigned long long>(paths.ucx_get_pages),
               static_cast<unsigned long long>(paths.mapped_put_pages),
               static_cast<unsigned long long>(paths.mapped_get_pages),
               static_cast<unsigned long long>(paths.mapped_get_retries),
               static_cast<unsigned long long>(paths.message_puts),
               static_cast<unsigned long long>(paths.message_gets),
               static_cast<unsigned long long>(paths.inline_put_pages),
               static_cast<unsigned long long>(paths.inline_get_pages),
               static_cast<unsigned long long>(paths.lane_put_pages),
               static_cast<unsigned long long>(paths.lane_get_pages),
               static_cast<unsigned long long>(paths.lane_direct_put_pages),
               static_cast<unsigned long long>(paths.lane_direct_get_pages));
  if (const std::string path = absl::GetFlag(FLAGS_json); !path.empty()) {
    std::vector<std::string> rows;
    for (const Cell& c : cells) rows.push_back(CellJson(c));
    std::ofstream out(path, std::ios::trunc);
    out << absl::StrFormat(
        "{\"target\": \"%s\", \"batch_pages\": %d, \"duration_ms\": %d, \"ops\": %d, "
        "\"lookup_chain\": %d, \"ucx_put_pages\": %d, \"ucx_get_pages\": %d, "
        "\"inline_put_pages\": %d, \"inline_get_pages\": %d, \"mapped_put_pages\": %d, "
        "\"mapped_get_pages\": %d, \"mapped_get_retries\": %d, \"message_puts\": %d, "
        "\"message_gets\": %d, \"lane_put_pages\": %d, \"lane_get_pages\": %d, "
        "\"lane_direct_put_pages\": %d, \"lane_direct_get_pages\": %d, "
        "\"cells\": [\n  %s\n]}\n",
        absl::GetFlag(FLAGS_target), absl::GetFlag(FLAGS_batch_pages),
        absl::GetFlag(FLAGS_duration_ms), absl::GetFlag(FLAGS_ops),
        absl::GetFlag(FLAGS_lookup_chain), paths.ucx_put_pages, paths.ucx_get_pages,
        paths.inline_put_pages, paths.inline_get_pages, paths.mapped_put_pages,
        paths.mapped_get_pages, paths.mapped_get_retries, paths.message_puts, paths.message_gets,
        paths.lane_put_pages, paths.lane_get_pages, paths.lane_direct_put_pages,
        paths.lane_direct_get_pages, absl::StrJoin(rows, ",\n  "));
    if (!out.flush()) return absl::InternalError(absl::StrCat("cannot write ", path));
  }
  return absl::OkStatus();
}

}  // namespace
}  // namespace kvtier::ops

int main(int argc, char** argv) {
  // Page-sized message buffers stay on the heap instead of a fresh mmap per
  // message (see kvstore/service/server_main.cc); a worker would do the same.
  mallopt(M_MMAP_THRESHOLD, 96 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  kvtier::SetToolUsage("kvtier-bench --target HOST:PORT [--page_sizes ..] [--clients ..]");
  absl::ParseCommandLine(argc, argv);
  absl::Status s = kvtier::ops::Run();
  if (!s.ok()) {
    std::fprintf(stderr, "kvtier-bench: %s\n", s.ToString().c_str());
    return absl::IsInvalidArgument(s) ? 2 : 1;
  }
  return 0;
}
