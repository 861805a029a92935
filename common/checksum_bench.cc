// Page checksums side by side with the limits that matter for them, in one
// run: PageChecksum (libxxhash's run-time-dispatched XXH3), the same
// library's baseline XXH3 entry point, and a plain memcpy of the same
// bytes. Pages of 16 KiB to 4 MiB, in cache.
//
//   build/common/checksum_bench --benchmark_counters_tabular=true
#include <xxhash.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/checksum.h"

namespace kvtier {
namespace {

std::vector<uint8_t> Page(size_t bytes) {
  std::vector<uint8_t> page(bytes);
  for (size_t i = 0; i < bytes; ++i) page[i] = static_cast<uint8_t>(i * 131 + 7);
  return page;
}

void BM_PageChecksum(benchmark::State& state) {
  const std::vector<uint8_t> page = Page(static_cast<size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(PageChecksum(page.data(), page.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

// What PageChecksum was before it used the dispatched entry points.
void BM_BaselineXxh3(benchmark::State& state) {
  const std::vector<uint8_t> page = Page(static_cast<size_t>(state.range(0)));
  for (auto _ : state) benchmark::DoNotOptimize(XXH3_64bits(page.data(), page.size()));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

void BM_Memcpy(benchmark::State& state) {
  const std::vector<uint8_t> page = Page(static_cast<size_t>(state.range(0)));
  std::vector<uint8_t> copy(page.size());
  for (auto _ : state) {
    std::memcpy(copy.data(), page.data(), page.size());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * state.range(0));
}

BENCHMARK(BM_PageChecksum)->RangeMultiplier(4)->Range(16 << 10, 4 << 20);
BENCHMARK(BM_BaselineXxh3)->RangeMultiplier(4)->Range(16 << 10, 4 << 20);
BENCHMARK(BM_Memcpy)->RangeMultiplier(4)->Range(16 << 10, 4 << 20);

}  // namespace
}  // namespace kvtier

BENCHMARK_MAIN();
