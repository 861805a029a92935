// What a pin's write-through costs: batches of 16 pages put into the RAM
// tier, with and without a pin of the batch (which writes the pages to
// RocksDB before it returns), into a fresh directory under $TMPDIR (or
// /tmp). The ratio of the two rates is the cost of a durable pin.
//
//   pin_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "kvstore/core/store.h"

namespace kvtier::store {
namespace {

constexpr int kBatch = 16;

std::string FreshDir(const char* name) {
  const char* tmp = std::getenv("TMPDIR");
  std::filesystem::path dir = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
                              (std::string("kvtier_pin_bench_") + name);
  std::filesystem::remove_all(dir);
  return dir.string();
}

// range(0): page bytes; range(1): 1 to pin every batch after its put.
void BM_PutBatch(benchmark::State& state) {
  const int64_t page_bytes = state.range(0);
  const bool pin = state.range(1) != 0;
  const std::string dir = FreshDir(pin ? "pin" : "put");
  StoreOptions options;
  options.data_dir = dir;
  options.ram.capacity_bytes = uint64_t{1} << 30;
  options.disk.capacity_bytes = uint64_t{8} << 30;
  auto store = Store::Open(options);
  if (!store.ok()) {
    state.SkipWithError(std::string(store.status().message()).c_str());
    return;
  }
  const PageLayout layout{.page_size = static_cast<uint32_t>(page_bytes / 4096),
                          .n_kv_heads = 8,
                          .head_dim = 128,
                          .dtype = DType::kF16};
  std::vector<uint8_t> bytes(page_bytes);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<uint8_t>(i * 131 + 7);
  const uint64_t checksum = PageChecksum(bytes.data(), bytes.size());
  std::vector<absl::Span<const uint8_t>> data(kBatch, bytes);
  uint64_t n = 0;
  for (auto _ : state) {
    std::vector<PutSpec> specs;
    std::vector<PageKey> keys;
    for (int i = 0; i < kBatch; ++i) {
      keys.push_back(PageKey{.hash = {.hi = 0x9147, .lo = n++}, .layer = 0});
      specs.push_back(PutSpec{.key = keys.back(), .layout = layout, .checksum = checksum});
    }
    auto put = (*store)->BatchPut(specs, data);
    if (!put.ok()) state.SkipWithError(std::string(put.status().message()).c_str());
    if (pin) {
      auto pinned = (*store)->Pin(keys, 60'000, 0);
      if (!pinned.ok()) state.SkipWithError(std::string(pinned.status().message()).c_str());
    }
    state.PauseTiming();  // keep both tiers from filling
    auto deleted = (*store)->Delete(keys, /*force=*/true);
    if (!deleted.ok()) state.SkipWithError(std::string(deleted.status().message()).c_str());
    state.ResumeTiming();
  }
  state.SetBytesProcessed(state.iterations() * kBatch * page_bytes);
  store->reset();
  std::filesystem::remove_all(dir);
}

BENCHMARK(BM_PutBatch)
    ->ArgsProduct({{64 << 10, 256 << 10, 1 << 20}, {0, 1}})
    ->ArgNames({"page_bytes", "pin"})
    ->UseRealTime();

}  // namespace
}  // namespace kvtier::store

BENCHMARK_MAIN();
