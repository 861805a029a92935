// RocksTier throughput: GB/s of page writes and reads for 64 KiB..4 MiB
// pages, into a fresh directory under $TMPDIR (or /tmp). And what a pin's
// write-through costs (BM_PutBatch): batches of 16 pages put into a
// Store's RAM tier, with and without a pin of the batch (which writes the
// pages to RocksDB before it returns); the ratio of the two rates is the
// cost of a durable pin.
//
//   rocks_tier_bench --benchmark_counters_tabular=true
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "common/checksum.h"
#include "kvstore/core/rocks_tier.h"
#include "kvstore/core/store.h"

namespace kvtier::store {
namespace {

// A page layout of exactly `bytes` bytes (f16, 8 heads x 128 dims, K and V:
// 4 KiB per token).
PageLayout LayoutOf(int64_t bytes) {
  return PageLayout{.page_size = static_cast<uint32_t>(bytes / 4096),
                    .n_kv_heads = 8,
                    .head_dim = 128,
                    .dtype = DType::kF16};
}

std::string FreshDir(const char* name) {
  const char* tmp = std::getenv("TMPDIR");
  std::filesystem::path dir = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
                              (std::string("kvtier_rocks_bench_") + name);
  std::filesystem::remove_all(dir);
  return dir.string();
}

std::vector<uint8_t> PatternBytes(int64_t bytes) {
  std::vector<uint8_t> out(bytes);
  for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<uint8_t>(i * 131 + 7);
  return out;
}

PageKey KeyOf(uint64_t n) { return PageKey{.hash = {.hi = 0xbe7c, .lo = n}, .layer = 0}; }

// Enough pages to exceed the memtable, so reads hit blob files.
constexpr int64_t kBytesPerRun = int64_t{256} << 20;

void BM_Write(benchmark::State& state) {
  const int64_t page_bytes = state.range(0);
  const std::string dir = FreshDir("write");
  auto tier = RocksTier::Open(dir);
  if (!tier.ok()) {
    state.SkipWithError(std::string(tier.status().message()).c_str());
    return;
  }
  const std::vector<uint8_t> bytes = PatternBytes(page_bytes);
  const PageMeta meta{.layout = LayoutOf(page_bytes),
                      .bytes = static_cast<uint64_t>(page_bytes),
                      .checksum = PageChecksum(bytes.data(), bytes.size())};
  uint64_t n = 0;
  for (auto _ : state) {
    absl::Status s = (*tier)->Put({{.key = KeyOf(n++), .meta = meta, .bytes = bytes}});
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
  }
  state.SetBytesProcessed(state.iterations() * page_bytes);
  tier->reset();
  std::filesystem::remove_all(dir);
}

void BM_Read(benchmark::State& state) {
  const int64_t page_bytes = state.range(0);
  const std::string dir = FreshDir("read");
  auto tier = RocksTier::Open(dir);
  if (!tier.ok()) {
    state.SkipWithError(std::string(tier.status().message()).c_str());
    return;
  }
  std::vector<uint8_t> bytes(page_bytes, 0x5a);
  const PageMeta meta{.layout = LayoutOf(page_bytes),
                      .bytes = static_cast<uint64_t>(page_bytes),
                      .checksum = PageChecksum(bytes.data(), bytes.size())};
  const uint64_t pages = std::max<int64_t>(1, kBytesPerRun / page_bytes);
  for (uint64_t n = 0; n < pages; ++n) {
    absl::Status s = (*tier)->Put({{.key = KeyOf(n), .meta = meta, .bytes = bytes}});
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      return;
    }
  }
  uint64_t n = 0;
  for (auto _ : state) {
    auto got = (*tier)->Get(KeyOf(n++ % pages));
    if (!got.ok()) state.SkipWithError(std::string(got.status().message()).c_str());
    benchmark::DoNotOptimize(got);
  }
  state.SetBytesProcessed(state.iterations() * page_bytes);
  tier->reset();
  std::filesystem::remove_all(dir);
}

// range(0): page bytes; range(1): 1 to pin every batch after its put.
void BM_PutBatch(benchmark::State& state) {
  constexpr int kBatch = 16;
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
  const std::vector<uint8_t> bytes = PatternBytes(page_bytes);
  const PageLayout layout = LayoutOf(page_bytes);
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
    auto put = (*store)->BatchPut(specs, data);
    if (!put.ok()) state.SkipWithError(std::string(put.status().message()).c_str());
    if (pin) {
      auto pinned = (*store)->Pin(0, keys, 60'000, PinId{});
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

BENCHMARK(BM_Write)->RangeMultiplier(4)->Range(64 << 10, 4 << 20)->UseRealTime();
BENCHMARK(BM_Read)->RangeMultiplier(4)->Range(64 << 10, 4 << 20)->UseRealTime();
BENCHMARK(BM_PutBatch)
    ->ArgsProduct({{64 << 10, 256 << 10, 1 << 20}, {0, 1}})
    ->ArgNames({"page_bytes", "pin"})
    ->UseRealTime();

}  // namespace
}  // namespace kvtier::store

BENCHMARK_MAIN();
