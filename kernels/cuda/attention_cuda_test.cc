// CUDA decode attention, LSE merge, quantization and gather/scatter against
// the CPU reference. Skipped without a GPU.
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/decode_attention.h"
#include "kernels/decode_plan.h"
#include "kernels/gather_scatter.h"
#include "kernels/quantize.h"
#include "kernels/testing/cuda_test_util.h"
#include "kernels/testing/test_util.h"

namespace kvtier::kernels {
namespace {

using testing::DeviceBuffer;
using testing::Download;
using testing::Upload;

class CudaAttentionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveGpu()) GTEST_SKIP() << "no CUDA device";
  }
};

struct AttnCase {
  uint32_t page_size, hkv, group, dim;
  ScalarType kv_type;
  bool per_head;
  std::vector<uint32_t> tokens;
  uint32_t target_ctas;  // the plan's; 0 = the device's
  float key_scale;
};

void CompareAttention(const AttnCase& c) {
  std::mt19937 rng(c.dim + c.group + c.page_size);
  const uint32_t lists = c.per_head ? c.hkv : 1, hq = c.hkv * c.group;
  const size_t page_elems = 2 * size_t{c.page_size} * c.hkv * c.dim;
  std::vector<int32_t> indptr = {0}, indices, last_len;
  uint32_t pool_pages = 0;
  for (uint32_t t : c.tokens) pool_pages += lists * ((t + c.page_size - 1) / c.page_size);
  std::vector<int32_t> perm(pool_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  size_t next = 0;
  for (uint32_t t : c.tokens) {
    const uint32_t pages = (t + c.page_size - 1) / c.page_size;
    for (uint32_t l = 0; l < lists; ++l) {
      for (uint32_t p = 0; p < pages; ++p) indices.push_back(perm[next++]);
      indptr.push_back(static_cast<int32_t>(indices.size()));
    }
    last_len.push_back(static_cast<int32_t>(t - (pages - 1) * c.page_size));
  }
  std::vector<float> values = testing::AdversarialFloats(pool_pages * page_elems, 3, 8.0f);
  for (size_t i = 0; i < values.size(); ++i) {
    if ((i / (page_elems / 2)) % 2 == 0) values[i] *= c.key_scale;
  }
  const testing::TypedBuffer pool = testing::MakeTyped(values, c.kv_type);
  const testing::TypedBuffer q =
      testing::MakeTyped(testing::RandomFloats(c.tokens.size() * hq * c.dim, 4), c.kv_type);

  DecodeAttentionArgs a;
  a.query_type = c.kv_type;
  a.batch = static_cast<uint32_t>(c.tokens.size());
  a.n_q_heads = hq;
  a.sm_scale = 1.0f / std::sqrt(static_cast<float>(c.dim));
  a.kv.kv_type = c.kv_type;
  a.kv.page_size = c.page_size;
  a.kv.n_kv_heads = c.hkv;
  a.kv.head_dim = c.dim;
  a.kv.page_stride_bytes = page_elems * ScalarBytes(c.kv_type);
  a.kv.pool_pages = pool_pages;
  a.kv.per_head_lists = c.per_head;
  a.kv.total_entries = static_cast<uint32_t>(indices.size());
  const size_t rows = size_t{a.batch} * hq;
  std::vector<float> out(rows * c.dim), lse(rows);
  a.queries = q.data();
  a.kv.pool = pool.data();
  a.kv.indptr = indptr.data();
  a.kv.indices = indices.data();
  a.kv.last_page_len = last_len.data();
  a.out = out.data();
  a.lse = lse.data();
  ThreadPool threads(0);
  ASSERT_TRUE(DecodeAttentionCpu(a, &threads).ok());

  DecodePlanOptions options;
  if (c.target_ctas == 0) {
    const auto target = DecodeAttentionCudaTargetCtas(a);
    ASSERT_TRUE(target.ok()) << target.status();
    options.target_ctas = *target;
  } else {
    options.target_ctas = c.target_ctas;
  }
  const auto plan = PlanDecodeAttention(a, options);
  ASSERT_TRUE(plan.ok()) << plan.status();
  std::vector<uint8_t> plan_bytes(plan->DeviceBytes());
  plan->Serialize(plan_bytes.data());

  DeviceBuffer dq = Upload(q.bytes), dpool = Upload(pool.bytes), dindptr = Upload(indptr),
               dind = Upload(indices), dlast = Upload(last_len), dplan = Upload(plan_bytes);
  DeviceBuffer dout(out.size() * sizeof(float)), dlse(lse.size() * sizeof(float));
  const size_t ws = plan->WorkspaceBytes(c.group, c.dim);
  DeviceBuffer dws(ws);
  ASSERT_TRUE(dpool.status().ok());
  a.queries = dq.get();
  a.kv.pool = dpool.get();
  a.kv.indptr = dindptr.as<int32_t>();
  a.kv.indices = dind.as<int32_t>();
  a.kv.last_page_len = dlast.as<int32_t>();
  a.out = dout.as<float>();
  a.lse = dlse.as<float>();
  a.workspace = dws.get();
  a.workspace_bytes = ws;
  ASSERT_TRUE(DecodeAttentionCuda(a, ViewOnDevice(*plan, dplan.get()), nullptr).ok());
  ASSERT_TRUE(testing::Sync().ok());
  const std::vector<float> gout = Download<float>(dout, out.size());
  const std::vector<float> glse = Download<float>(dlse, lse.size());
  // Both accumulate in fp32 in different orders: outputs within 2e-5 of
  // max |v| (8 here), log-sum-exp within 2e-5 absolute plus 1e-6 relative;
  // an empty sequence's is -inf on both (ASSERT_NEAR of two infinities
  // fails: their difference is NaN).
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], gout[i], 2e-5f * 8.0f) << i;
  for (size_t i = 0; i < lse.size(); ++i) {
    if (std::isinf(lse[i])) {
      ASSERT_EQ(lse[i], glse[i]) << i;
      continue;
    }
    ASSERT_NEAR(lse[i], glse[i], 2e-5f + 1e-6f * std::abs(lse[i])) << i;
  }
}

TEST_F(CudaAttentionTest, DecodeAttentionMatchesCpu) {
  // The pipelined kernel's shapes (fp16/bf16, head_dim 64/128/256, groups
  // 1/2/3/4/8; group 3 at head_dim 64 has a partial last warp) and the
  // generic kernel's (fp32 pages, head_dim 80, group 5); plans for 1 or 7
  // CTAs (lists cut and merged) and for the device's own target.
  for (uint32_t page_size : {16u, 32u}) {
    for (uint32_t group : {1u, 2u, 3u, 4u, 8u}) {
      for (uint32_t dim : {64u, 128u, 256u}) {
        for (ScalarType t : {ScalarType::kF16, ScalarType::kBF16}) {
          for (uint32_t target : {7u, 0u}) {
            CompareAttention({page_size,
                              2,
                              group,
                              dim,
                              t,
                              group == 4,
                              {1000, 1, page_size, 333, 0},
                              target,
                              1.0f});
          }
        }
      }
    }
  }
  for (uint32_t target : {1u, 7u, 0u}) {
    CompareAttention({16, 2, 4, 128, ScalarType::kF32, false, {1000, 17}, target, 1.0f});
    CompareAttention({16, 2, 5, 80, ScalarType::kF16, true, {1000, 17}, target, 1.0f});
    CompareAttention({1, 3, 3, 64, ScalarType::kBF16, false, {50, 3}, target, 1.0f});
    CompareAttention({5, 1, 1, 128, ScalarType::kF16, false, {333, 4}, target, 1.0f});
  }
}

TEST_F(CudaAttentionTest, DecodeAttentionLongContextsAndExtremeLogits) {
  for (uint32_t context : {8192u, 32768u, 131072u}) {
    CompareAttention({16, 8, 4, 128, ScalarType::kBF16, false, {context, context - 7}, 0, 1.0f});
  }
  CompareAttention({32, 1, 8, 128, ScalarType::kF16, false, {131072}, 32, 200.0f});
  CompareAttention({32, 8, 4, 128, ScalarType::kF16, true, {131072}, 0, 200.0f});
}

TEST_F(CudaAttentionTest, MergeStatesMatchesCpu) {
  const uint32_t rows = 300, states = 7, dim = 128;
  std::vector<float> so = testing::RandomFloats(rows * states * dim, 1, -5, 5);
  std::vector<float> sl = testing::RandomFloats(rows * states, 2, -50, 50);
  for (size_t i = 0; i < sl.size(); i += 5) sl[i] = -INFINITY;
  for (uint32_t s = 0; s < states; ++s) sl[s] = -INFINITY;  // row 0 all empty
  std::vector<float> out(rows * dim), lse(rows);
  MergeStatesArgs m{so.data(), sl.data(), rows, states, dim, out.data(), lse.data()};
  ASSERT_TRUE(MergeAttentionStatesCpu(m, nullptr).ok());
  DeviceBuffer dso = Upload(so), dsl = Upload(sl);
  DeviceBuffer dout(out.size() * 4), dlse(lse.size() * 4);
  m = {dso.as<float>(), dsl.as<float>(), rows, states, dim, dout.as<float>(), dlse.as<float>()};
  ASSERT_TRUE(MergeAttentionStatesCuda(m, nullptr).ok());
  ASSERT_TRUE(testing::Sync().ok());
  const std::vector<float> gout = Download<float>(dout, out.size());
  const std::vector<float> glse = Download<float>(dlse, lse.size());
  for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], gout[i], 1e-5f * 5) << i;
  EXPECT_EQ(glse[0], -INFINITY);
  for (size_t i = 1; i < lse.size(); ++i) ASSERT_NEAR(lse[i], glse[i], 1e-5f) << i;
}

TEST_F(CudaAttentionTest, QuantizeIsByteIdenticalToCpu) {
  for (ScalarType qt : {ScalarType::kInt8, ScalarType::kFp8E4M3}) {
    for (ScalarType ft : {ScalarType::kF16, ScalarType::kBF16, ScalarType::kF32}) {
      for (uint32_t page_size : {16u, 32u}) {
        const uint32_t heads = 8, dim = 128, n = 9;
        const size_t fb = FloatPageBytes(page_size, heads, dim, ft);
        const size_t qb = QuantizedPageBytes(page_size, heads, dim, qt);
        std::vector<float> values = testing::AdversarialFloats(
            n * fb / ScalarBytes(ft), 8, ft == ScalarType::kF16 ? 65504.0f : 1e30f);
        // All-zero groups, with negative zeros: the scale-0 path.
        const size_t e = size_t{page_size} * heads * dim;
        for (size_t c = 0; c < dim; ++c) values[c] = values[e + c] = -0.0f;
        const testing::TypedBuffer src = testing::MakeTyped(values, ft);
        PageQuantArgs a{page_size, heads, dim, ft, qt, n, src.data(), fb, nullptr, qb + 1};
        std::vector<uint8_t> q(n * (qb + 1), 0);
        a.dst = q.data();
        ASSERT_TRUE(QuantizePagesCpu(a, nullptr).ok());
        DeviceBuffer dsrc = Upload(src.bytes), dq(q.size());
        cudaMemset(dq.get(), 0, q.size());
        a.src = dsrc.get();
        a.dst = dq.get();
        ASSERT_TRUE(QuantizePagesCuda(a, nullptr).ok());
        ASSERT_TRUE(testing::Sync().ok());
        ASSERT_EQ(Download<uint8_t>(dq, q.size()), q);
        // Dequantize both ways from the same bytes.
        PageQuantArgs back{page_size, heads, dim, ft, qt, n, q.data(), qb + 1, nullptr, fb};
        std::vector<uint8_t> y(n * fb);
        back.dst = y.data();
        ASSERT_TRUE(DequantizePagesCpu(back, nullptr).ok());
        DeviceBuffer dy(y.size());
        back.src = dq.get();
        back.dst = dy.get();
        ASSERT_TRUE(DequantizePagesCuda(back, nullptr).ok());
        ASSERT_TRUE(testing::Sync().ok());
        ASSERT_EQ(Download<uint8_t>(dy, y.size()), y);
      }
    }
  }
}

TEST_F(CudaAttentionTest, GatherScatterMatchesCpu) {
  for (size_t page_bytes : {size_t{65536}, size_t{1001}}) {
    const size_t stride = page_bytes + (page_bytes % 16 == 0 ? 0 : 7);
    const uint32_t pool_pages = 100;
    std::vector<uint8_t> pool(pool_pages * stride);
    std::mt19937 rng(3);
    for (auto& b : pool) b = static_cast<uint8_t>(rng());
    std::vector<int32_t> ids = {5, 99, 0, 42, 17, 18};
    PageCopyArgs a{pool.data(), stride,     pool_pages,
                   page_bytes,  ids.data(), static_cast<uint32_t>(ids.size()),
                   nullptr};
    std::vector<uint8_t> staging(ids.size() * page_bytes);
    a.staging = staging.data();
    ASSERT_TRUE(GatherPagesCpu(a, nullptr).ok());
    DeviceBuffer dpool = Upload(pool), dids = Upload(ids), dst(staging.size());
    a.pool = dpool.get();
    a.page_ids = dids.as<int32_t>();
    a.staging = dst.get();
    ASSERT_TRUE(GatherPagesCuda(a, nullptr).ok());
    ASSERT_TRUE(testing::Sync().ok());
    ASSERT_EQ(Download<uint8_t>(dst, staging.size()), staging);
    // Scatter into a zeroed device pool: exactly the listed pages come back.
    DeviceBuffer fresh(pool.size());
    cudaMemset(fresh.get(), 0, pool.size());
    a.pool = fresh.get();
    ASSERT_TRUE(ScatterPagesCuda(a, nullptr).ok());
    ASSERT_TRUE(testing::Sync().ok());
    const std::vector<uint8_t> got = Download<uint8_t>(fresh, pool.size());
    std::vector<uint8_t> want(pool.size(), 0);
    for (int32_t id : ids) {
      std::copy_n(pool.begin() + id * stride, page_bytes, want.begin() + id * stride);
    }
    ASSERT_EQ(got, want);
  }
}

}  // namespace
}  // namespace kvtier::kernels
