// CPU kernel throughput next to memcpy bandwidth measured in the same run.
//
// Shape: a Llama-3-8B layer (8 KV heads, 32 query heads, head_dim 128),
// pages of 16 tokens, fp16 keys and values, one sequence. Every benchmark
// reports bytes_per_second (mean) and best_GBps (fastest iteration) over the
// bytes it must read (digest bytes for estimation and top-k, the listed
// pages' K and V for attention, page bytes for quantization and copies),
// and `x_memcpy`: best_GBps over the memcpy rate (bytes copied per second,
// best of 20, same thread count, 128 MiB buffers) measured once per thread
// count at first use. Decode attention with a
// budget also reports `speedup_vs_full`: the time of attention over all
// pages of the context divided by its own time.
//
// Arguments: the last one of every benchmark is the thread count (0 = every
// hardware thread).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "kernels/decode_attention.h"
#include "kernels/digest.h"
#include "kernels/estimate.h"
#include "kernels/gather_scatter.h"
#include "kernels/quantize.h"
#include "kernels/thread_pool.h"
#include "kernels/topk.h"

namespace kvtier::kernels {
namespace {

constexpr uint32_t kPageSize = 16;
constexpr uint32_t kKvHeads = 8;
constexpr uint32_t kQHeads = 32;
constexpr uint32_t kHeadDim = 128;
constexpr size_t kPageElems = 2 * size_t{kPageSize} * kKvHeads * kHeadDim;
constexpr size_t kPageBytes = kPageElems * 2;  // fp16

using Clock = std::chrono::steady_clock;

ThreadPool& Pool(int threads) {
  static std::map<int, std::unique_ptr<ThreadPool>> pools;
  auto& p = pools[threads];
  if (!p) p = std::make_unique<ThreadPool>(threads);
  return *p;
}

// Cheap deterministic fp16 values in about [-2, 2].
void FillHalf(uint16_t* dst, size_t n, uint32_t seed) {
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x = x * 1664525u + 1013904223u;
    dst[i] = static_cast<uint16_t>(((x >> 16) & 0x83ffu) | (0x3000u + ((x >> 8) & 0x0c00u)));
  }
}

// Bytes copied per second by memcpy over 128 MiB (4x the L3), best of 20, split over the
// pool's threads like the kernels.
double MemcpyBytesPerSecond(int threads) {
  static std::map<int, double> cache;
  auto it = cache.find(threads);
  if (it != cache.end()) return it->second;
  constexpr size_t kBytes = size_t{128} << 20;
  std::vector<char> src(kBytes, 1), dst(kBytes, 0);
  ThreadPool& pool = Pool(threads);
  const size_t parts = static_cast<size_t>(pool.num_threads()) * 4;
  double best = 0;
  for (int rep = 0; rep < 20; ++rep) {
    const auto t0 = Clock::now();
    pool.ParallelFor(parts, [&](size_t i) {
      const size_t chunk = kBytes / parts;
      std::memcpy(dst.data() + i * chunk, src.data() + i * chunk, chunk);
    });
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, kBytes / s);
  }
  benchmark::DoNotOptimize(dst.data());
  return cache[threads] = best;
}

// Records the wall time of its scope into *best when shorter.
class BestOf {
 public:
  explicit BestOf(double* best) : best_(best), start_(Clock::now()) {}
  ~BestOf() {
    *best_ = std::min(*best_, std::chrono::duration<double>(Clock::now() - start_).count());
  }

 private:
  double* best_;
  Clock::time_point start_;
};

// bytes_per_second is the mean over iterations (wall time); best_GBps and
// x_memcpy use the fastest iteration, like the memcpy figure, so that the
// ratio compares best with best on a shared machine.
void Report(benchmark::State& state, double bytes_per_iter, int threads, double best_seconds) {
  state.SetBytesProcessed(static_cast<int64_t>(bytes_per_iter * state.iterations()));
  const double best_bps = bytes_per_iter / best_seconds;
  state.counters["best_GBps"] = best_bps / 1e9;
  state.counters["x_memcpy"] = best_bps / MemcpyBytesPerSecond(threads);
  state.counters["memcpy_GBps"] = MemcpyBytesPerSecond(threads) / 1e9;
}

void BM_Memcpy(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  for (auto _ : state) benchmark::DoNotOptimize(MemcpyBytesPerSecond(threads));
  state.counters["memcpy_GBps"] = MemcpyBytesPerSecond(threads) / 1e9;
}
BENCHMARK(BM_Memcpy)->Arg(1)->Arg(0)->Iterations(1);

// ---- a context: pool, digests, query -------------------------------------

struct Context {
  uint32_t pages = 0;
  std::vector<uint16_t> pool;   // pages * kPageElems fp16
  std::vector<uint16_t> query;  // kQHeads * kHeadDim fp16
  std::vector<float> digests;   // min/max, fp32
  std::vector<int32_t> ids;     // 0..pages-1
};

const Context& GetContext(uint32_t tokens) {
  static std::map<uint32_t, std::unique_ptr<Context>> cache;
  auto& c = cache[tokens];
  if (c) return *c;
  c = std::make_unique<Context>();
  c->pages = tokens / kPageSize;
  c->pool.resize(size_t{c->pages} * kPageElems);
  FillHalf(c->pool.data(), c->pool.size(), tokens);
  c->query.resize(size_t{kQHeads} * kHeadDim);
  FillHalf(c->query.data(), c->query.size(), 7);
  c->ids.resize(c->pages);
  std::iota(c->ids.begin(), c->ids.end(), 0);
  c->digests.resize(size_t{c->pages} * DigestSlotElements(DigestKind::kMinMax, kKvHeads, kHeadDim));
  DigestArgs d;
  d.pool = c->pool.data();
  d.page_stride_bytes = kPageBytes;
  d.pool_pages = c->pages;
  d.key_type = ScalarType::kF16;
  d.page_size = kPageSize;
  d.n_kv_heads = kKvHeads;
  d.head_dim = kHeadDim;
  d.page_ids = c->ids.data();
  d.n_pages = c->pages;
  d.digests = c->digests.data();
  d.digest_slots = c->ids.data();
  d.digest_capacity = c->pages;
  if (!ComputeDigestsCpu(d, &Pool(0)).ok()) std::abort();
  return *c;
}

void BM_Digest(benchmark::State& state) {
  const int threads = static_cast<int>(state.range(0));
  const Context& c = GetContext(32768);
  std::vector<float> out(c.digests.size());
  DigestArgs d;
  d.pool = c.pool.data();
  d.page_stride_bytes = kPageBytes;
  d.pool_pages = c.pages;
  d.key_type = ScalarType::kF16;
  d.page_size = kPageSize;
  d.n_kv_heads = kKvHeads;
  d.head_dim = kHeadDim;
  d.page_ids = c.ids.data();
  d.n_pages = c.pages;
  d.digests = out.data();
  d.digest_slots = c.ids.data();
  d.digest_capacity = c.pages;
  double best = 1e30;  // fastest iteration, seconds
  for (auto _ : state) {
    BestOf timer(&best);
    if (!ComputeDigestsCpu(d, &Pool(threads)).ok()) state.SkipWithError("digest failed");
  }
  Report(state, c.pages * kPageBytes / 2.0, threads, best);  // K bytes
}
BENCHMARK(BM_Digest)->Arg(1)->Arg(0)->Unit(benchmark::kMillisecond)->UseRealTime();

EstimateArgs MakeEstimate(const Context& c, std::vector<float>& scores,
                          std::vector<int32_t>& indptr) {
  indptr = {0, static_cast<int32_t>(c.pages)};
  scores.resize(size_t{c.pages} * kKvHeads);
  EstimateArgs a;
  a.queries = c.query.data();
  a.query_type = ScalarType::kF16;
  a.batch = 1;
  a.n_q_heads = kQHeads;
  a.n_kv_heads = kKvHeads;
  a.head_dim = kHeadDim;
  a.digests = c.digests.data();
  a.digest_type = ScalarType::kF32;
  a.kind = DigestKind::kMinMax;
  a.digest_capacity = c.pages;
  a.page_indptr = indptr.data();
  a.digest_slots = c.ids.data();
  a.total_pages = c.pages;
  a.scores = scores.data();
  return a;
}

TopKArgs MakeTopK(const Context& c, const std::vector<float>& scores,
                  const std::vector<int32_t>& indptr, std::vector<int32_t>& selected,
                  std::vector<int32_t>& counts) {
  TopKArgs t;
  t.scores = scores.data();
  t.page_indptr = indptr.data();
  t.batch = 1;
  t.total_pages = c.pages;
  t.n_rows = kKvHeads;
  t.sum_rows = true;  // one ranking per layer (ArkVale n_groups = 1)
  t.k = c.pages / 8;
  t.sink = 1;
  t.recent = 2;
  selected.resize(t.k);
  counts.resize(1);
  t.selected = selected.data();
  t.counts = counts.data();
  return t;
}

double DigestBytes(const Context& c) { return c.digests.size() * sizeof(float); }

void BM_Estimate(benchmark::State& state) {
  const uint32_t tokens = static_cast<uint32_t>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const Context& c = GetContext(tokens);
  std::vector<float> scores;
  std::vector<int32_t> indptr;
  EstimateArgs a = MakeEstimate(c, scores, indptr);
  double best = 1e30;  // fastest iteration, seconds
  for (auto _ : state) {
    BestOf timer(&best);
    if (!EstimateScoresCpu(a, &Pool(threads)).ok()) state.SkipWithError("estimate failed");
  }
  Report(state, DigestBytes(c), threads, best);
}

void BM_TopK(benchmark::State& state) {
  const uint32_t tokens = static_cast<uint32_t>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const Context& c = GetContext(tokens);
  std::vector<float> scores;
  std::vector<int32_t> indptr, selected, counts;
  EstimateArgs a = MakeEstimate(c, scores, indptr);
  if (!EstimateScoresCpu(a, &Pool(threads)).ok()) std::abort();
  TopKArgs t = MakeTopK(c, scores, indptr, selected, counts);
  double best = 1e30;  // fastest iteration, seconds
  for (auto _ : state) {
    BestOf timer(&best);
    if (!SelectTopKCpu(t, &Pool(threads)).ok()) state.SkipWithError("topk failed");
  }
  Report(state, scores.size() * sizeof(float), threads, best);
}

// The selection step of a budgeted layer: estimation then top-k, over the
// digest bytes (the target is >= 0.5 x memcpy).
void BM_EstimateTopK(benchmark::State& state) {
  const uint32_t tokens = static_cast<uint32_t>(state.range(0));
  const int threads = static_cast<int>(state.range(1));
  const Context& c = GetContext(tokens);
  std::vector<float> scores;
  std::vector<int32_t> indptr, selected, counts;
  EstimateArgs a = MakeEstimate(c, scores, indptr);
  TopKArgs t = MakeTopK(c, scores, indptr, selected, counts);
  double best = 1e30;  // fastest iteration, seconds
  for (auto _ : state) {
    BestOf timer(&best);
    if (!EstimateScoresCpu(a, &Pool(threads)).ok() || !SelectTopKCpu(t, &Pool(threads)).ok()) {
      state.SkipWithError("selection failed");
    }
  }
  Report(state, DigestBytes(c), threads, best);
}

#define KVTIER_CONTEXT_ARGS \
  ArgsProduct({{8192, 32768, 131072}, {1, 0}})->Unit(benchmark::kMicrosecond)->UseRealTime()
BENCHMARK(BM_Estimate)->KVTIER_CONTEXT_ARGS;
BENCHMARK(BM_TopK)->KVTIER_CONTEXT_ARGS;
BENCHMARK(BM_EstimateTopK)->KVTIER_CONTEXT_ARGS;

// ---- decode attention ------------------------------------------------------

DecodeAttentionArgs MakeAttention(const Context& c, const std::vector<int32_t>& indptr,
                                  const std::vector<int32_t>& list, std::vector<float>& out,
                                  std::vector<float>& lse, uint32_t splits) {
  static const int32_t kLastLen[1] = {kPageSize};
  out.resize(size_t{kQHeads} * kHeadDim);
  lse.resize(kQHeads);
  DecodeAttentionArgs a;
  a.queries = c.query.data();
  a.query_type = ScalarType::kF16;
  a.batch = 1;
  a.n_q_heads = kQHeads;
  a.sm_scale = 1.0f / std::sqrt(static_cast<float>(kHeadDim));
  a.kv.pool = c.pool.data();
  a.kv.kv_type = ScalarType::kF16;
  a.kv.page_size = kPageSize;
  a.kv.n_kv_heads = kKvHeads;
  a.kv.head_dim = kHeadDim;
  a.kv.page_stride_bytes = kPageBytes;
  a.kv.pool_pages = c.pages;
  a.kv.indptr = indptr.data();
  a.kv.indices = list.data();
  a.kv.last_page_len = kLastLen;
  a.kv.total_entries = static_cast<uint32_t>(list.size());
  a.num_splits = splits;
  a.out = out.data();
  a.lse = lse.data();
  return a;
}

// Splits so that every thread has work when there are few KV heads.
uint32_t SplitsFor(int threads, size_t pages) {
  const uint32_t t = static_cast<uint32_t>(Pool(threads).num_threads());
  return static_cast<uint32_t>(std::clamp<size_t>(pages / 8, 1, std::max(1u, t)));
}

double SecondsPerCall(const DecodeAttentionArgs& a, int threads, int reps) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = Clock::now();
    if (!DecodeAttentionCpu(a, &Pool(threads)).ok()) std::abort();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return best;
}

// Budgeted page lists: the sink page, the last 2 pages and every
// budget_div-th page from offset v, ascending, for v in [0, budget_div).
// Cycling through them touches the whole context like full attention does,
// so the budgeted run does not gain from a cache-resident working set.
std::vector<std::vector<int32_t>> BudgetLists(uint32_t pages, uint32_t budget_div) {
  std::vector<std::vector<int32_t>> lists(budget_div);
  const uint32_t budget = pages / budget_div;
  for (uint32_t v = 0; v < budget_div; ++v) {
    std::vector<int32_t>& l = lists[v];
    l.push_back(0);
    for (uint32_t p = 1 + v; p < pages - 2 && l.size() < budget - 2; p += budget_div) {
      l.push_back(static_cast<int32_t>(p));
    }
    l.push_back(static_cast<int32_t>(pages - 2));
    l.push_back(static_cast<int32_t>(pages - 1));
  }
  return lists;
}

// Attention over all pages (budget_div 1) or over 1/budget_div of them.
void BM_DecodeAttention(benchmark::State& state) {
  const uint32_t tokens = static_cast<uint32_t>(state.range(0));
  const uint32_t budget_div = static_cast<uint32_t>(state.range(1));
  const int threads = static_cast<int>(state.range(2));
  const Context& c = GetContext(tokens);
  const std::vector<std::vector<int32_t>> lists =
      budget_div == 1 ? std::vector<std::vector<int32_t>>{c.ids} : BudgetLists(c.pages, budget_div);
  std::vector<std::vector<int32_t>> indptrs;
  std::vector<DecodeAttentionArgs> args;
  std::vector<float> out, lse;
  for (const auto& l : lists) indptrs.push_back({0, static_cast<int32_t>(l.size())});
  for (size_t v = 0; v < lists.size(); ++v) {
    args.push_back(
        MakeAttention(c, indptrs[v], lists[v], out, lse, SplitsFor(threads, lists[v].size())));
  }
  size_t next = 0;
  double best = 1e30;  // fastest iteration, seconds
  for (auto _ : state) {
    BestOf timer(&best);
    if (!DecodeAttentionCpu(args[next], &Pool(threads)).ok())
      state.SkipWithError("attention failed");
    next = (next + 1) % args.size();
  }
  Report(state, static_cast<double>(lists[0].size()) * kPageBytes, threads, best);
  if (budget_div > 1) {
    // Full and budgeted calls alternate so both see the same machine load;
    // the best of 5 full calls over the mean of each list's best of 5 gives
    // the speed-up (best-of filters out preemption on a shared machine).
    std::vector<int32_t> full_indptr = {0, static_cast<int32_t>(c.pages)};
    std::vector<float> fo, fl;
    const DecodeAttentionArgs full =
        MakeAttention(c, full_indptr, c.ids, fo, fl, SplitsFor(threads, c.pages));
    double full_best = 1e30;
    std::vector<double> list_best(args.size(), 1e30);
    for (int rep = 0; rep < 5; ++rep) {
      full_best = std::min(full_best, SecondsPerCall(full, threads, 1));
      for (size_t v = 0; v < args.size(); ++v) {
        list_best[v] = std::min(list_best[v], SecondsPerCall(args[v], threads, 1));
      }
    }
    const double budget_mean =
        std::accumulate(list_best.begin(), list_best.end(), 0.0) / list_best.size();
    state.counters["speedup_vs_full"] = full_best / budget_mean;
    state.counters["target"] = 0.7 * budget_div;
  }
}
BENCHMARK(BM_DecodeAttention)
    ->ArgsProduct({{8192, 32768, 131072}, {1, 8}, {0}})
    ->Unit(benchmark::kMillisecond)
    ->MinTime(0.5)
    ->UseRealTime();

// ---- quantization and copies ----------------------------------------------

void BM_Quantize(benchmark::State& state) {
  const bool fp8 = state.range(0) != 0;
  const int threads = static_cast<int>(state.range(1));
  const bool dequantize = state.range(2) != 0;
  const Context& c = GetContext(8192);
  const ScalarType qt = fp8 ? ScalarType::kFp8E4M3 : ScalarType::kInt8;
  const size_t qbytes = QuantizedPageBytes(kPageSize, kKvHeads, kHeadDim, qt);
  std::vector<uint8_t> q(c.pages * qbytes);
  std::vector<uint16_t> back(c.pool.size());
  PageQuantArgs a{kPageSize, kKvHeads,      kHeadDim,   ScalarType::kF16, qt,
                  c.pages,   c.pool.data(), kPageBytes, q.data(),         qbytes};
  if (!QuantizePagesCpu(a, &Pool(threads)).ok()) std::abort();
  PageQuantArgs d{kPageSize, kKvHeads, kHeadDim, ScalarType::kF16, qt,
                  c.pages,   q.data(), qbytes,   back.data(),      kPageBytes};
  double best = 1e30;  // fastest iteration, seconds
  for (auto _ : state) {
    BestOf timer(&best);
    const absl::Status st =
        dequantize ? DequantizePagesCpu(d, &Pool(threads)) : QuantizePagesCpu(a, &Pool(threads));
    if (!st.ok()) state.SkipWithError("quantize failed");
  }
  Report(state, static_cast<double>(c.pages) * kPageBytes, threads, best);  // fp16 side
}
BENCHMARK(BM_Quantize)
    ->ArgNames({"fp8", "threads", "dequant"})
    ->ArgsProduct({{0, 1}, {1, 0}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_GatherScatter(benchmark::State& state) {
  const bool scatter = state.range(0) != 0;
  const int threads = static_cast<int>(state.range(1));
  const Context& c = GetContext(131072);
  // Every 8th page: a recall batch of 1/8 of the context.
  std::vector<int32_t> ids;
  for (uint32_t p = 0; p < c.pages; p += 8) ids.push_back(static_cast<int32_t>(p));
  std::vector<uint8_t> staging(ids.size() * kPageBytes);
  std::vector<uint16_t> pool = c.pool;
  PageCopyArgs a{pool.data(),   kPageBytes, c.pages,
                 kPageBytes,    ids.data(), static_cast<uint32_t>(ids.size()),
                 staging.data()};
  double best = 1e30;  // fastest iteration, seconds
  for (auto _ : state) {
    BestOf timer(&best);
    const absl::Status st =
        scatter ? ScatterPagesCpu(a, &Pool(threads)) : GatherPagesCpu(a, &Pool(threads));
    if (!st.ok()) state.SkipWithError("copy failed");
  }
  Report(state, static_cast<double>(ids.size()) * kPageBytes, threads, best);
}
BENCHMARK(BM_GatherScatter)
    ->ArgNames({"scatter", "threads"})
    ->ArgsProduct({{0, 1}, {1, 0}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace kvtier::kernels

BENCHMARK_MAIN();
