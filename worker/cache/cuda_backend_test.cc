// The CUDA backend against the CPU backend: the same decode runs give the
// same pages and attention outputs, recalled pages land byte-identical in
// GPU slots, and CudaDevice reports a missing GPU with its documented code.
// Tests that need a GPU skip without one (ctest label gpu).
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/device/cuda_device.h"
#include "worker/device/kernel_dispatch.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/policy/token_policy.h"
#include "worker/policy/window_policy.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker {
namespace {

constexpr uint32_t kPage = 4;
constexpr uint32_t kKvHeads = 2;
constexpr uint32_t kQHeads = 4;
constexpr uint32_t kDim = 16;
constexpr uint32_t kRow = kKvHeads * kDim;

int GpuCount() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

#define SKIP_WITHOUT_GPU() \
  if (GpuCount() == 0) GTEST_SKIP() << "no CUDA device"

TEST(CudaDeviceTest, CreateReportsTheDocumentedErrors) {
  EXPECT_EQ(CudaDevice::Create(-1).status().code(), absl::StatusCode::kInvalidArgument);
  const int n = GpuCount();
  if (n == 0) {
    absl::StatusOr<std::unique_ptr<CudaDevice>> d = CudaDevice::Create(0);
    EXPECT_EQ(d.status().code(), absl::StatusCode::kUnavailable) << d.status();
    EXPECT_NE(d.status().message().find("no usable CUDA device"), std::string::npos);
    EXPECT_EQ(CreateDevice("cuda").status().code(), absl::StatusCode::kUnavailable);
    return;
  }
  EXPECT_EQ(CudaDevice::Create(n).status().code(), absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<std::unique_ptr<Device>> d = CreateDevice("cuda:0");
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ((*d)->kind(), DeviceKind::kCuda);
}

TEST(CudaDeviceTest, AllocationsAreZeroedAndCopiesRoundTrip) {
  SKIP_WITHOUT_GPU();
  auto device = *CudaDevice::Create(0);
  constexpr size_t kBytes = 1 << 20;
  auto buffer = *device->Allocate(kBytes);
  ASSERT_EQ(buffer->bytes(), kBytes);
  std::vector<uint8_t> host(kBytes, 0xAB);
  ASSERT_TRUE(device->CopyToHost(host.data(), buffer->data(), kBytes).ok());
  EXPECT_TRUE(std::all_of(host.begin(), host.end(), [](uint8_t b) { return b == 0; }));
  for (size_t i = 0; i < kBytes; ++i) host[i] = static_cast<uint8_t>(i * 131 + 7);
  ASSERT_TRUE(device->CopyToDevice(buffer->data(), host.data(), kBytes).ok());
  std::vector<uint8_t> back(kBytes);
  ASSERT_TRUE(device->CopyToHost(back.data(), buffer->data(), kBytes).ok());
  EXPECT_EQ(back, host);
}

TEST(CudaDeviceTest, DispatchRejectsPageIdsOutsideThePool) {
  SKIP_WITHOUT_GPU();
  auto device = *CudaDevice::Create(0);
  auto pool = *device->Allocate(size_t{2} * kPage * kRow * 2 * sizeof(float));
  KernelScratch scratch(device.get());
  std::vector<float> q(kQHeads * kDim, 1.0f), out(kQHeads * kDim), lse(kQHeads);
  const int32_t indptr[2] = {0, 1}, bad_page = 2, last = kPage;
  kernels::DecodeAttentionArgs args;
  args.queries = q.data();
  args.batch = 1;
  args.n_q_heads = kQHeads;
  args.sm_scale = 0.25f;
  args.kv.pool = pool->data();
  args.kv.kv_type = kernels::ScalarType::kF32;
  args.kv.page_size = kPage;
  args.kv.n_kv_heads = kKvHeads;
  args.kv.head_dim = kDim;
  args.kv.page_stride_bytes = size_t{kPage} * kRow * 2 * sizeof(float);
  args.kv.pool_pages = 2;
  args.kv.indptr = indptr;
  args.kv.indices = &bad_page;
  args.kv.last_page_len = &last;
  args.kv.total_entries = 1;
  args.out = out.data();
  args.lse = lse.data();
  EXPECT_EQ(DecodeAttention(args, &scratch, nullptr).code(), absl::StatusCode::kInvalidArgument);
}

// One cache, runner and store over a given device.
struct Run {
  Run(Device* device, Policy* policy, uint32_t n_layers, uint32_t pool_pages, DType dtype) {
    TransferQueueOptions qopts;
    qopts.n_threads = 2;
    queue = *PageTransferQueue::Create(&store, qopts);
    KvCacheOptions o;
    o.layout = PageLayout{.page_size = kPage, .n_kv_heads = kKvHeads, .head_dim = kDim,
                          .dtype = dtype};
    o.n_layers = n_layers;
    o.n_q_heads = kQHeads;
    o.pool_pages_per_layer = pool_pages;
    o.max_pages_per_sequence = 256;
    auto created = KvCacheManager::Create(o, device, policy, queue.get());
    EXPECT_TRUE(created.ok()) << created.status();
    cache = *std::move(created);
    runner = std::make_unique<DecodeRunner>(cache.get(), nullptr);
  }
  ~Run() { cache.reset(); }

  InProcessPageStore store;
  std::unique_ptr<PageTransferQueue> queue;
  std::unique_ptr<KvCacheManager> cache;
  std::unique_ptr<DecodeRunner> runner;
  StepStats stats;
};

// The same inputs fed to a CPU run and a run on `other` (the GPU, or a
// second CPU device as the harness's own control), step by step.
class CpuVsCuda {
 public:
  CpuVsCuda(Device* other, Policy* cpu_policy, Policy* cuda_policy, uint32_t n_layers,
            uint32_t budget, DType dtype)
      : cpu_(&cpu_device_, cpu_policy, n_layers, budget, dtype),
        cuda_(other, cuda_policy, n_layers, budget, dtype),
        n_layers_(n_layers),
        exact_(other->kind() == DeviceKind::kCpu) {
    std::vector<uint32_t> budgets(n_layers, budget);
    EXPECT_TRUE(cpu_.cache->AddSequence(1, budgets).ok());
    EXPECT_TRUE(cuda_.cache->AddSequence(1, budgets).ok());
  }

  std::vector<float> Next(size_t n) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> out(n);
    for (float& x : out) x = dist(rng_);
    return out;
  }

  void Prefill(uint32_t n) {
    std::vector<uint32_t> ids(n);
    for (uint32_t i = 0; i < n; ++i) ids[i] = 1000 + i;
    for (Run* r : {&cpu_, &cuda_}) ASSERT_TRUE(r->cache->AppendTokenIds(1, ids).ok());
    for (uint32_t l = 0; l < n_layers_; ++l) {
      const std::vector<float> k = Next(n * kRow), v = Next(n * kRow), q = Next(kQHeads * kDim);
      Track(v);
      for (Run* r : {&cpu_, &cuda_}) {
        absl::Status s = r->runner->Prefill(1, l, k.data(), v.data(), n, q.data(), 1, &r->stats);
        ASSERT_TRUE(s.ok()) << s;
      }
    }
  }

  // One decode step on every layer; checks pages and outputs agree.
  void StepAndCompare(uint32_t token) {
    for (Run* r : {&cpu_, &cuda_}) ASSERT_TRUE(r->cache->AppendTokenIds(1, {token}).ok());
    for (uint32_t l = 0; l < n_layers_; ++l) {
      const std::vector<float> q = Next(kQHeads * kDim), k = Next(kRow), v = Next(kRow);
      Track(v);
      std::vector<float> out[2], lse[2];
      int i = 0;
      for (Run* r : {&cpu_, &cuda_}) {
        // Both runs plan from settled pages: a backup still in flight in
        // one and done in the other would change what may be evicted.
        ASSERT_TRUE(r->cache->ReapBackups(1, /*wait=*/true).ok());
        out[i].resize(kQHeads * kDim);
        lse[i].resize(kQHeads);
        absl::Status s = r->runner->DecodeLayer(1, l, q.data(), k.data(), v.data(),
                                                out[i].data(), lse[i].data(), &r->stats);
        ASSERT_TRUE(s.ok()) << s;
        ++i;
      }
      const LayerView a = *cpu_.cache->View(1, l), b = *cuda_.cache->View(1, l);
      ASSERT_EQ(a.n_tokens, b.n_tokens) << "token " << token << " layer " << l;
      ASSERT_TRUE(std::equal(a.states.begin(), a.states.end(), b.states.begin(), b.states.end()))
          << "page states differ at token " << token << " layer " << l;
      // Two fp32 orders of the same sum, each within 2e-5 * max|v| of the
      // exact value (kernels/README.md).
      // exact (the control): the same backend gives the same bits.
      const float tol = exact_ ? 0.0f : 4e-5f * max_abs_v_;
      for (size_t e = 0; e < out[0].size(); ++e) {
        ASSERT_NEAR(out[0][e], out[1][e], tol) << "token " << token << " layer " << l;
      }
      for (uint32_t h = 0; h < kQHeads; ++h) {
        ASSERT_NEAR(lse[0][h], lse[1][h], exact_ ? 0.0f : 4e-5f);
      }
    }
  }

  // Every page held in both pools has the same bytes.
  void ExpectResidentPagesIdentical() {
    for (uint32_t l = 0; l < n_layers_; ++l) {
      const LayerView view = *cpu_.cache->View(1, l);
      for (uint32_t p = 0; p < view.n_pages; ++p) {
        if (!IsResident(view.states[p])) continue;
        absl::StatusOr<std::string> a = cpu_.cache->ResidentPageBytes(1, l, p);
        absl::StatusOr<std::string> b = cuda_.cache->ResidentPageBytes(1, l, p);
        ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
        EXPECT_EQ(*a, *b) << "layer " << l << " page " << p;
      }
    }
  }

  Run& cpu() { return cpu_; }
  Run& cuda() { return cuda_; }

 private:
  void Track(const std::vector<float>& v) {
    for (float x : v) max_abs_v_ = std::max(max_abs_v_, std::fabs(x));
  }

  std::mt19937 rng_{42};
  CpuDevice cpu_device_;
  Run cpu_;
  Run cuda_;
  const uint32_t n_layers_;
  const bool exact_;
  float max_abs_v_ = 0.0f;
};

ArkvaleOptions SmallArkvale() {
  ArkvaleOptions o;
  o.n_sink_pages = 1;
  o.n_win_pages = 2;
  o.topk_pages = 4;
  o.n_unlimited_layers = 0;
  return o;
}

void ArkvaleScenario(Device* other) {
  auto cpu_policy = *ArkvalePolicy::Create(SmallArkvale());
  auto cuda_policy = *ArkvalePolicy::Create(SmallArkvale());
  CpuVsCuda run(other, cpu_policy.get(), cuda_policy.get(), 2, 6, DType::kF16);
  run.Prefill(37);
  for (uint32_t step = 0; step < 48; ++step) {
    run.StepAndCompare(5000 + step);
    if (::testing::Test::HasFatalFailure()) return;
  }
  // The scenario must have recalled pages into GPU slots, the same ones.
  EXPECT_GT(run.cuda().stats.pages_recalled, 0u);
  EXPECT_EQ(run.cuda().stats.pages_recalled, run.cpu().stats.pages_recalled);
  EXPECT_EQ(run.cuda().stats.bytes_recalled, run.cpu().stats.bytes_recalled);
  EXPECT_EQ(run.cuda().cache->counters().pages_backed_up,
            run.cpu().cache->counters().pages_backed_up);
  run.ExpectResidentPagesIdentical();
}


void RecallScenario(Device* other) {
  auto cpu_policy = *ArkvalePolicy::Create(SmallArkvale());
  auto cuda_policy = *ArkvalePolicy::Create(SmallArkvale());
  CpuVsCuda run(other, cpu_policy.get(), cuda_policy.get(), 1, 6, DType::kBF16);
  run.Prefill(61);
  ASSERT_GT(run.cuda().cache->counters().pages_recalled, 0u);
  // Every resident page, recalled ones included, matches the stored copy
  // byte for byte (its checksum is the backup's) and the CPU pool.
  const LayerView view = *run.cuda().cache->View(1, 0);
  uint32_t checked = 0;
  for (uint32_t p = 0; p + 1 < view.n_pages; ++p) {
    if (!IsResident(view.states[p])) continue;
    std::string bytes = *run.cuda().cache->ResidentPageBytes(1, 0, p);
    const PageKey key = *run.cuda().cache->KeyOf(1, 0, p);
    absl::StatusOr<std::vector<FetchedPage>> fetched = run.cuda().store.Get({key});
    ASSERT_TRUE(fetched.ok()) << fetched.status();
    ASSERT_EQ(fetched->size(), 1u);
    ASSERT_EQ((*fetched)[0].status, FetchStatus::kOk);
    EXPECT_EQ(bytes, (*fetched)[0].bytes) << "page " << p;
    ++checked;
  }
  EXPECT_GE(checked, 3u);
  run.ExpectResidentPagesIdentical();
}

void TovaScenario(Device* other) {
  TovaPolicy cpu_policy, cuda_policy;
  CpuVsCuda run(other, &cpu_policy, &cuda_policy, 2, 5, DType::kF32);
  run.Prefill(30);
  for (uint32_t step = 0; step < 24; ++step) {
    run.StepAndCompare(7000 + step);
    if (::testing::Test::HasFatalFailure()) return;
  }
  run.ExpectResidentPagesIdentical();
}

// Long lists: the CUDA dispatch splits them (one split per 32 pages).
void FullCacheScenario(Device* other) {
  FullCachePolicy cpu_policy, cuda_policy;
  CpuVsCuda run(other, &cpu_policy, &cuda_policy, 1, 256, DType::kF16);
  run.Prefill(901);
  for (uint32_t step = 0; step < 6; ++step) {
    run.StepAndCompare(9000 + step);
    if (::testing::Test::HasFatalFailure()) return;
  }
  run.ExpectResidentPagesIdentical();
}

// The scenarios' own control: two CPU backends agree bit for bit, so a
// difference on the GPU is the GPU's.
TEST(WorkerCudaTest, ScenariosAreExactWithTwoCpuBackends) {
  CpuDevice second;
  ArkvaleScenario(&second);
  RecallScenario(&second);
  TovaScenario(&second);
  FullCacheScenario(&second);
}

TEST(WorkerCudaTest, ArkvaleDecodeSelectsTheSamePagesAsTheCpuBackend) {
  SKIP_WITHOUT_GPU();
  auto gpu = *CudaDevice::Create(0);
  ArkvaleScenario(gpu.get());
}

TEST(WorkerCudaTest, RecalledPagesAreByteIdenticalInGpuSlots) {
  SKIP_WITHOUT_GPU();
  auto gpu = *CudaDevice::Create(0);
  RecallScenario(gpu.get());
}

TEST(WorkerCudaTest, TovaTokenEvictionMatchesTheCpuBackend) {
  SKIP_WITHOUT_GPU();
  auto gpu = *CudaDevice::Create(0);
  TovaScenario(gpu.get());
}

TEST(WorkerCudaTest, LongFullCacheAttentionMatchesTheCpuBackend) {
  SKIP_WITHOUT_GPU();
  auto gpu = *CudaDevice::Create(0);
  FullCacheScenario(gpu.get());
}

}  // namespace
}  // namespace kvtier::worker
