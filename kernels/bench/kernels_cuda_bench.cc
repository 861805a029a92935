// CUDA kernel bandwidth as a fraction of the device's HBM peak
// (2 x memory clock x bus width, from the device attributes).
//
// A Llama-3-8B layer (8 KV heads, 32 query heads, head_dim 128, fp16
// pages): attention and estimate + top-k over contexts 8K-128K, batches 1
// and 16, pages of 16 and 32 (ops/bench/compare_torch_gpu.py puts torch
// beside them); quantize and gather over one sequence with pages of 16.
// Times come from CUDA events
// around each call; bytes are those each kernel must read (and write, for
// copies and quantization). Every benchmark reports `GBps` and
// `frac_hbm_peak`; without a device each one is skipped with an error.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/decode_attention.h"
#include "kernels/decode_plan.h"
#include "kernels/digest.h"
#include "kernels/estimate.h"
#include "kernels/gather_scatter.h"
#include "kernels/quantize.h"
#include "kernels/testing/cuda_test_util.h"
#include "kernels/topk.h"

namespace kvtier::kernels {
namespace {

using testing::DeviceBuffer;
using testing::Upload;

constexpr uint32_t kPageSize = 16;
constexpr uint32_t kKvHeads = 8;
constexpr uint32_t kQHeads = 32;
constexpr uint32_t kHeadDim = 128;
constexpr size_t kPageElems = 2 * size_t{kPageSize} * kKvHeads * kHeadDim;
constexpr size_t kPageBytes = kPageElems * 2;

double HbmPeakBytesPerSecond() {
  int dev = 0, clock_khz = 0, bus_bits = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&clock_khz, cudaDevAttrMemoryClockRate, dev);
  cudaDeviceGetAttribute(&bus_bits, cudaDevAttrGlobalMemoryBusWidth, dev);
  return 2.0 * clock_khz * 1e3 * bus_bits / 8.0;
}

// Runs `call` once per iteration between CUDA events (manual time).
void TimeLoop(benchmark::State& state, double bytes, const std::function<absl::Status()>& call) {
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  if (!call().ok()) state.SkipWithError("kernel failed");  // warm-up
  for (auto _ : state) {
    cudaEventRecord(start);
    const absl::Status st = call();
    cudaEventRecord(stop);
    cudaEventSynchronize(stop);
    if (!st.ok()) {
      state.SkipWithError(std::string(st.message()).c_str());
      break;
    }
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    state.SetIterationTime(ms / 1e3);
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  state.SetBytesProcessed(static_cast<int64_t>(bytes * state.iterations()));
  state.counters["GBps"] =
      benchmark::Counter(bytes * state.iterations() / 1e9, benchmark::Counter::kIsRate);
  state.counters["frac_hbm_peak"] = benchmark::Counter(
      bytes * state.iterations() / HbmPeakBytesPerSecond(), benchmark::Counter::kIsRate);
}

// A pool of `tokens` tokens in pages of kPageSize with varied fp16 values.
struct DeviceContext {
  uint32_t pages = 0;
  DeviceBuffer pool;
};

const DeviceContext* GetContext(uint32_t tokens) {
  static std::map<uint32_t, std::unique_ptr<DeviceContext>> cache;
  auto& c = cache[tokens];
  if (c) return c.get();
  c = std::make_unique<DeviceContext>();
  c->pages = tokens / kPageSize;
  std::vector<uint16_t> pool(size_t{c->pages} * kPageElems);
  for (size_t i = 0; i < pool.size(); ++i) pool[i] = FloatToHalf(std::sin(0.001f * i));
  c->pool = Upload(pool);
  if (!c->pool.status().ok() || !testing::Sync().ok()) return nullptr;
  return c.get();
}

#define KVTIER_NEED_GPU(c)                     \
  if (!testing::HaveGpu() || (c) == nullptr) { \
    state.SkipWithError("no CUDA device");     \
    return;                                    \
  }

// Args: context tokens, batch, page size, fp16 digests (0/1). Min/max
// digests of random values for every page of every sequence; each step
// estimates every page (rows summed per layer, as ArkVale ranks) and keeps
// 1/8 of them (1 sink, 2 recent). Bytes: the digests read.
void BM_CudaEstimateTopK(benchmark::State& state) {
  const auto context = static_cast<uint32_t>(state.range(0));
  const auto batch = static_cast<uint32_t>(state.range(1));
  const auto page_size = static_cast<uint32_t>(state.range(2));
  const ScalarType digest_type = state.range(3) ? ScalarType::kF16 : ScalarType::kF32;
  if (!testing::HaveGpu()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const uint32_t seq_pages = context / page_size, total = batch * seq_pages;
  const size_t slot = DigestSlotElements(DigestKind::kMinMax, kKvHeads, kHeadDim);
  // Random cuboids (hi >= lo) from a fast generator; the values only need
  // to rank pages differently.
  uint32_t x = 12345;
  auto next = [&x] {
    x = x * 1664525u + 1013904223u;
    return static_cast<float>(x >> 8) / 16777216.0f - 0.5f;
  };
  const size_t elems = size_t{total} * slot;
  std::vector<uint8_t> digests(elems * ScalarBytes(digest_type));
  for (size_t i = 0; i < elems; i += 2 * kHeadDim) {
    for (uint32_t c = 0; c < kHeadDim; ++c) {
      const float lo = next(), hi = lo + std::abs(next());
      StoreFromFloat(digests.data(), digest_type, i + c, hi);
      StoreFromFloat(digests.data(), digest_type, i + kHeadDim + c, lo);
    }
  }
  std::vector<uint16_t> q(size_t{batch} * kQHeads * kHeadDim);
  for (uint16_t& v : q) v = FloatToHalf(next());
  std::vector<int32_t> indptr = {0}, slots(total);
  for (uint32_t b = 0; b < batch; ++b) indptr.push_back(static_cast<int32_t>((b + 1) * seq_pages));
  std::iota(slots.begin(), slots.end(), 0);
  DeviceBuffer d_digests = Upload(digests), d_q = Upload(q), d_indptr = Upload(indptr),
               d_slots = Upload(slots), scores(size_t{total} * kKvHeads * 4);
  const uint32_t k = seq_pages / 8;
  DeviceBuffer sel(size_t{batch} * k * 4), cnt(size_t{batch} * 4);
  if (!d_digests.status().ok() || !scores.status().ok()) {
    state.SkipWithError("device allocation failed");
    return;
  }
  EstimateArgs e;
  e.queries = d_q.get();
  e.query_type = ScalarType::kF16;
  e.batch = batch;
  e.n_q_heads = kQHeads;
  e.n_kv_heads = kKvHeads;
  e.head_dim = kHeadDim;
  e.digests = d_digests.get();
  e.digest_type = digest_type;
  e.kind = DigestKind::kMinMax;
  e.digest_capacity = total;
  e.page_indptr = d_indptr.as<int32_t>();
  e.digest_slots = d_slots.as<int32_t>();
  e.total_pages = total;
  e.scores = scores.as<float>();
  TopKArgs t;
  t.scores = scores.as<float>();
  t.page_indptr = d_indptr.as<int32_t>();
  t.batch = batch;
  t.total_pages = total;
  t.n_rows = kKvHeads;
  t.sum_rows = true;
  t.k = k;
  t.sink = 1;
  t.recent = 2;
  t.selected = sel.as<int32_t>();
  t.counts = cnt.as<int32_t>();
  TimeLoop(state, static_cast<double>(digests.size()), [&] {
    absl::Status st = EstimateScoresCuda(e, nullptr);
    return st.ok() ? SelectTopKCuda(t, nullptr) : st;
  });
}
BENCHMARK(BM_CudaEstimateTopK)
    ->ArgNames({"context", "batch", "page", "fp16"})
    ->ArgsProduct({{8192, 32768, 131072}, {1, 16}, {16, 32}, {0, 1}})
    ->UseManualTime();

// A pool of `pages` pages of `page_size` tokens (Llama-3-8B layer shape,
// fp16), filled by a memset: bandwidth does not depend on the values.
const DeviceBuffer* GetPool(uint32_t pages, uint32_t page_size) {
  static std::map<std::pair<uint32_t, uint32_t>, std::unique_ptr<DeviceBuffer>> cache;
  auto& pool = cache[{pages, page_size}];
  if (pool) return pool.get();
  const size_t page_bytes = 2 * size_t{page_size} * kKvHeads * kHeadDim * 2;
  pool = std::make_unique<DeviceBuffer>(size_t{pages} * page_bytes);
  if (!pool->status().ok() ||
      cudaMemset(pool->get(), 0x2a, pool->bytes()) != cudaSuccess || !testing::Sync().ok()) {
    pool.reset();
    return nullptr;
  }
  return pool.get();
}

// Args: context tokens, budget divisor (1 = every page), batch, page size.
// Each sequence attends every div-th of its own pages (plan and run; the
// plan is made once, as a step of fixed shape would). Reports GB/s of KV
// read and the CTAs the plan launched.
void BM_CudaDecodeAttention(benchmark::State& state) {
  const auto context = static_cast<uint32_t>(state.range(0));
  const auto div = static_cast<uint32_t>(state.range(1));
  const auto batch = static_cast<uint32_t>(state.range(2));
  const auto page_size = static_cast<uint32_t>(state.range(3));
  const uint32_t seq_pages = context / page_size;
  const DeviceBuffer* pool = testing::HaveGpu() ? GetPool(batch * seq_pages, page_size) : nullptr;
  KVTIER_NEED_GPU(pool);
  const size_t page_bytes = 2 * size_t{page_size} * kKvHeads * kHeadDim * 2;
  std::vector<int32_t> list, indptr = {0};
  for (uint32_t b = 0; b < batch; ++b) {
    for (uint32_t p = 0; p < seq_pages; p += div) {
      list.push_back(static_cast<int32_t>(b * seq_pages + p));
    }
    indptr.push_back(static_cast<int32_t>(list.size()));
  }
  const std::vector<int32_t> last(batch, static_cast<int32_t>(page_size));
  std::vector<uint16_t> q(size_t{batch} * kQHeads * kHeadDim);
  for (size_t i = 0; i < q.size(); ++i) q[i] = FloatToHalf(std::cos(0.01f * i));
  DecodeAttentionArgs a;
  a.query_type = ScalarType::kF16;
  a.batch = batch;
  a.n_q_heads = kQHeads;
  a.sm_scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  a.kv.pool = pool->get();
  a.kv.kv_type = ScalarType::kF16;
  a.kv.page_size = page_size;
  a.kv.n_kv_heads = kKvHeads;
  a.kv.head_dim = kHeadDim;
  a.kv.page_stride_bytes = page_bytes;
  a.kv.pool_pages = batch * seq_pages;
  a.kv.indptr = indptr.data();
  a.kv.indices = list.data();
  a.kv.last_page_len = last.data();
  a.kv.total_entries = static_cast<uint32_t>(list.size());
  a.queries = q.data();
  a.out = reinterpret_cast<float*>(16);  // planning reads only indptr
  a.lse = reinterpret_cast<float*>(16);
  DecodePlanOptions options;
  const absl::StatusOr<uint32_t> target = DecodeAttentionCudaTargetCtas(a);
  if (!target.ok()) {
    state.SkipWithError(std::string(target.status().message()).c_str());
    return;
  }
  options.target_ctas = *target;
  const absl::StatusOr<DecodePlan> plan = PlanDecodeAttention(a, options);
  if (!plan.ok()) {
    state.SkipWithError(std::string(plan.status().message()).c_str());
    return;
  }
  std::vector<uint8_t> plan_bytes(plan->DeviceBytes());
  plan->Serialize(plan_bytes.data());
  DeviceBuffer d_list = Upload(list), d_indptr = Upload(indptr), d_last = Upload(last),
               d_q = Upload(q), d_plan = Upload(plan_bytes);
  DeviceBuffer out(size_t{batch} * kQHeads * kHeadDim * 4), lse(size_t{batch} * kQHeads * 4);
  DeviceBuffer ws(plan->WorkspaceBytes(kQHeads / kKvHeads, kHeadDim));
  a.queries = d_q.get();
  a.kv.indptr = d_indptr.as<int32_t>();
  a.kv.indices = d_list.as<int32_t>();
  a.kv.last_page_len = d_last.as<int32_t>();
  a.workspace = ws.get();
  a.workspace_bytes = ws.bytes();
  a.out = out.as<float>();
  a.lse = lse.as<float>();
  const DecodePlanView view = ViewOnDevice(*plan, d_plan.get());
  TimeLoop(state, static_cast<double>(list.size()) * page_bytes,
           [&] { return DecodeAttentionCuda(a, view, nullptr); });
  state.counters["ctas"] = static_cast<double>(view.n_items);
  state.counters["target_ctas"] = static_cast<double>(options.target_ctas);
}
BENCHMARK(BM_CudaDecodeAttention)
    ->ArgNames({"context", "div", "batch", "page"})
    ->ArgsProduct({{8192, 32768, 131072}, {1, 4, 8, 16}, {1, 16}, {16, 32}})
    ->UseManualTime();

void BM_CudaQuantize(benchmark::State& state) {
  const DeviceContext* c = testing::HaveGpu() ? GetContext(32768) : nullptr;
  KVTIER_NEED_GPU(c);
  const ScalarType qt = state.range(0) ? ScalarType::kFp8E4M3 : ScalarType::kInt8;
  const size_t qb = QuantizedPageBytes(kPageSize, kKvHeads, kHeadDim, qt);
  DeviceBuffer q(c->pages * qb);
  PageQuantArgs a{kPageSize, kKvHeads,      kHeadDim,   ScalarType::kF16, qt,
                  c->pages,  c->pool.get(), kPageBytes, q.get(),          qb};
  TimeLoop(state, static_cast<double>(c->pages) * (kPageBytes + qb),
           [&] { return QuantizePagesCuda(a, nullptr); });
}
BENCHMARK(BM_CudaQuantize)->Arg(0)->Arg(1)->UseManualTime();

void BM_CudaGather(benchmark::State& state) {
  const DeviceContext* c = testing::HaveGpu() ? GetContext(131072) : nullptr;
  KVTIER_NEED_GPU(c);
  std::vector<int32_t> ids;
  for (uint32_t p = 0; p < c->pages; p += 8) ids.push_back(static_cast<int32_t>(p));
  DeviceBuffer d_ids = Upload(ids), staging(ids.size() * kPageBytes);
  PageCopyArgs a{c->pool.get(), kPageBytes,          c->pages,
                 kPageBytes,    d_ids.as<int32_t>(), static_cast<uint32_t>(ids.size()),
                 staging.get()};
  TimeLoop(state, 2.0 * ids.size() * kPageBytes, [&] { return GatherPagesCuda(a, nullptr); });
}
BENCHMARK(BM_CudaGather)->UseManualTime();

}  // namespace
}  // namespace kvtier::kernels

BENCHMARK_MAIN();
