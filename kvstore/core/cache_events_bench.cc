// What the cache event log costs the store's put path, and how fast a
// watcher reads it.
//
//   BM_PutDelete/BYTES/EVENTS: batches of 16 pages put into a Store's RAM
//     tier and deleted again (two events a page with the log), without
//     (EVENTS 0) and with (1) an event log; the ratio of the two rates is
//     the log's cost on the store's own path (no RPC, no copy over a
//     network: where it shows most).
//   BM_Append: events appended per second, one thread.
//   BM_Read: events per second a reader of one tenant out of four gets.
//
//   cache_events_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "kvstore/core/cache_events.h"
#include "kvstore/core/store.h"

namespace kvtier::store {
namespace {

constexpr int kBatch = 16;

PageKey KeyOf(uint64_t n) { return PageKey{.hash = {.hi = 0xe7e7, .lo = n}, .layer = 0}; }

void BM_PutDelete(benchmark::State& state) {
  const int64_t page_bytes = state.range(0);
  const bool events = state.range(1) != 0;
  const char* tmp = std::getenv("TMPDIR");
  const std::filesystem::path dir = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
                                    (events ? "kvtier_events_bench_on" : "kvtier_events_bench_off");
  std::filesystem::remove_all(dir);
  CacheEventLog log(1 << 18);
  StoreOptions options;
  options.data_dir = dir.string();
  options.ram.capacity_bytes = uint64_t{256} << 20;
  if (events) options.events = &log;
  auto store = Store::Open(options);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  const PageLayout layout{.page_size = static_cast<uint32_t>(page_bytes / 512),
                          .n_kv_heads = 1,
                          .head_dim = 128,
                          .dtype = DType::kF16};
  const std::vector<uint8_t> bytes(page_bytes, 0x5a);
  const uint64_t checksum = PageChecksum(bytes.data(), bytes.size());
  const std::vector<absl::Span<const uint8_t>> data(kBatch, bytes);
  uint64_t n = 0;
  for (auto _ : state) {
    std::vector<PutSpec> specs;
    std::vector<PageKey> keys;
    for (int i = 0; i < kBatch; ++i) {
      keys.push_back(KeyOf(n++));
      specs.push_back(PutSpec{.key = keys.back(), .layout = layout, .checksum = checksum});
    }
    if (!(*store)->BatchPut(specs, data).ok() || !(*store)->Delete(keys, false).ok()) {
      state.SkipWithError("put or delete failed");
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * kBatch);
  state.counters["pages_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * kBatch),
                         benchmark::Counter::kIsRate);
  store->reset();
  std::filesystem::remove_all(dir);
}
BENCHMARK(BM_PutDelete)
    ->ArgsProduct({{4096, 65536}, {0, 1}})
    ->ArgNames({"bytes", "events"})
    ->UseRealTime();

void BM_Append(benchmark::State& state) {
  CacheEventLog log(1 << 18);
  uint64_t n = 0;
  for (auto _ : state) log.Append(CacheEvent::Kind::kStored, KeyOf(n++));
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Append);

void BM_Read(benchmark::State& state) {
  CacheEventLog log(1 << 16);
  for (uint64_t n = 0; n < (1 << 16); ++n) {
    PageKey key = KeyOf(n);
    key.tenant = n % 4;
    log.Append(CacheEvent::Kind::kStored, key);
  }
  size_t events = 0;
  for (auto _ : state) {
    uint64_t cursor = log.oldest_seq();
    while (cursor < log.next_seq()) {
      CacheEventLog::Slice slice = log.Read(cursor, 1, std::nullopt, 1024);
      events += slice.events.size();
      cursor = slice.next_seq;
    }
  }
  state.SetItemsProcessed(static_cast<int64_t>(events));
}
BENCHMARK(BM_Read);

}  // namespace
}  // namespace kvtier::store

BENCHMARK_MAIN();
