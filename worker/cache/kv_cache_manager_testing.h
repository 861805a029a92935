// Helpers shared by the KvCacheManager tests: a small page layout,
// deterministic inputs, and a manager over an in-process store with a
// decode runner (prefill and decode steps on every layer).
#ifndef KVTIER_WORKER_CACHE_KV_CACHE_MANAGER_TESTING_H_
#define KVTIER_WORKER_CACHE_KV_CACHE_MANAGER_TESTING_H_

#include <memory>
#include <random>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "worker/cache/decode_step.h"
#include "worker/cache/kv_cache_manager.h"
#include "worker/policy/arkvale_policy.h"
#include "worker/transfer/in_process_page_store.h"

namespace kvtier::worker::testing {

inline constexpr uint32_t kPage = 4;
inline constexpr uint32_t kKvHeads = 2;
inline constexpr uint32_t kQHeads = 4;
inline constexpr uint32_t kDim = 8;
inline constexpr uint32_t kRow = kKvHeads * kDim;

// Deterministic random K, V and queries.
class Inputs {
 public:
  explicit Inputs(uint32_t seed) : rng_(seed) {}
  std::vector<float> Next(size_t n) {
    std::normal_distribution<float> dist(0.0f, 1.0f);
    std::vector<float> out(n);
    for (float& x : out) x = dist(rng_);
    return out;
  }

 private:
  std::mt19937 rng_;
};

// The CPU backend, counting Upload calls and their ranges; a test can make
// uploads fail.
class RecordingDevice : public CpuDevice {
 public:
  absl::Status Upload(absl::Span<const UploadRange> ranges) override {
    ++uploads;
    ranges_uploaded += ranges.size();
    if (fail_uploads) return absl::InternalError("upload refused by the test");
    return CpuDevice::Upload(ranges);
  }

  int uploads = 0;
  size_t ranges_uploaded = 0;
  bool fail_uploads = false;
};

struct Harness {
  Harness(Policy* policy, uint32_t n_layers, uint32_t pool_pages,
          absl::Duration timeout = absl::Seconds(10), DType dtype = DType::kF32,
          DecodeOptions decode = DecodeOptions(), uint64_t pin_ttl_ms = 600'000) {
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
    o.transfer_timeout = timeout;
    o.pin_ttl_ms = pin_ttl_ms;
    auto created = KvCacheManager::Create(o, &device, policy, queue.get());
    EXPECT_TRUE(created.ok()) << created.status();
    cache = *std::move(created);
    runner = std::make_unique<DecodeRunner>(cache.get(), nullptr, decode);
  }
  ~Harness() {
    cache.reset();  // cancels sequences while the queue and store live
  }

  // Prefill of n tokens on every layer, token ids 1000 + i.
  absl::Status Prefill(uint64_t seq, uint32_t n, Inputs& in) {
    std::vector<uint32_t> ids(n);
    for (uint32_t i = 0; i < n; ++i) ids[i] = 1000 + i;
    if (absl::Status s = cache->AppendTokenIds(seq, ids); !s.ok()) return s;
    for (uint32_t l = 0; l < cache->options().n_layers; ++l) {
      std::vector<float> k = in.Next(n * kRow), v = in.Next(n * kRow), q = in.Next(kQHeads * kDim);
      if (absl::Status s = runner->Prefill(seq, l, k.data(), v.data(), n, q.data(), 1, &stats);
          !s.ok()) {
        return s;
      }
    }
    return absl::OkStatus();
  }

  // One decode step on every layer; outputs appended to `outs`.
  absl::Status Step(uint64_t seq, uint32_t token, Inputs& in, std::vector<float>* outs) {
    if (absl::Status s = cache->AppendTokenIds(seq, {token}); !s.ok()) return s;
    for (uint32_t l = 0; l < cache->options().n_layers; ++l) {
      std::vector<float> q = in.Next(kQHeads * kDim), k = in.Next(kRow), v = in.Next(kRow);
      std::vector<float> out(kQHeads * kDim);
      if (absl::Status s =
              runner->DecodeLayer(seq, l, q.data(), k.data(), v.data(), out.data(), nullptr,
                                  &stats);
          !s.ok()) {
        return s;
      }
      if (outs != nullptr) outs->insert(outs->end(), out.begin(), out.end());
    }
    return absl::OkStatus();
  }

  RecordingDevice device;
  InProcessPageStore store;
  std::unique_ptr<PageTransferQueue> queue;
  std::unique_ptr<KvCacheManager> cache;
  std::unique_ptr<DecodeRunner> runner;
  StepStats stats;
};

inline ArkvaleOptions SmallArkvale() {
  ArkvaleOptions o;
  o.n_sink_pages = 1;
  o.n_win_pages = 2;
  o.topk_pages = 4;
  o.n_unlimited_layers = 0;
  return o;
}

}  // namespace kvtier::worker::testing

#endif  // KVTIER_WORKER_CACHE_KV_CACHE_MANAGER_TESTING_H_
