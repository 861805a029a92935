// CUDA digest, estimation and top-k against the CPU reference. Skipped
// without a GPU.
#include <cmath>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/digest.h"
#include "kernels/estimate.h"
#include "kernels/testing/cuda_test_util.h"
#include "kernels/testing/test_util.h"
#include "kernels/topk.h"

namespace kvtier::kernels {
namespace {

using testing::DeviceBuffer;
using testing::Download;
using testing::Upload;

class CudaSelectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::HaveGpu()) GTEST_SKIP() << "no CUDA device";
  }
};

struct DigestCase {
  uint32_t page_size, heads, dim, pages;
  ScalarType key_type, digest_type;
  DigestKind kind;
  float outlier;
};

// Runs the digest on both sides over the same pool; returns both outputs.
void RunDigests(const DigestCase& c, std::vector<uint8_t>* cpu, std::vector<uint8_t>* gpu) {
  const size_t page_elems = 2 * size_t{c.page_size} * c.heads * c.dim;
  const testing::TypedBuffer pool = testing::MakeTyped(
      testing::AdversarialFloats(c.pages * page_elems, c.pages + c.dim, c.outlier), c.key_type);
  std::vector<int32_t> ids(c.pages), slots(c.pages);
  for (uint32_t i = 0; i < c.pages; ++i) {
    ids[i] = static_cast<int32_t>(c.pages - 1 - i);
    slots[i] = static_cast<int32_t>((i * 5) % c.pages);
  }
  if (c.pages % 5 == 0) {
    for (uint32_t i = 0; i < c.pages; ++i) slots[i] = static_cast<int32_t>(i);
  }
  const size_t out_bytes =
      c.pages * DigestSlotElements(c.kind, c.heads, c.dim) * ScalarBytes(c.digest_type);
  DigestArgs a;
  a.page_stride_bytes = page_elems * ScalarBytes(c.key_type);
  a.pool_pages = c.pages;
  a.key_type = c.key_type;
  a.page_size = c.page_size;
  a.n_kv_heads = c.heads;
  a.head_dim = c.dim;
  a.n_pages = c.pages;
  a.kind = c.kind;
  a.digest_type = c.digest_type;
  a.digest_capacity = c.pages;
  cpu->assign(out_bytes, 0);
  a.pool = pool.data();
  a.page_ids = ids.data();
  a.digest_slots = slots.data();
  a.digests = cpu->data();
  ASSERT_TRUE(ComputeDigestsCpu(a, nullptr).ok());
  DeviceBuffer d_pool = Upload(pool.bytes), d_ids = Upload(ids), d_slots = Upload(slots);
  DeviceBuffer d_out(out_bytes);
  ASSERT_TRUE(d_out.status().ok());
  a.pool = d_pool.get();
  a.page_ids = d_ids.as<int32_t>();
  a.digest_slots = d_slots.as<int32_t>();
  a.digests = d_out.get();
  ASSERT_TRUE(ComputeDigestsCuda(a, nullptr).ok());
  ASSERT_TRUE(testing::Sync().ok());
  *gpu = Download<uint8_t>(d_out, out_bytes);
}

TEST_F(CudaSelectTest, DigestsMatchCpu) {
  for (DigestKind kind : {DigestKind::kMinMax, DigestKind::kArkvaleMean, DigestKind::kCentroid}) {
    for (ScalarType kt : {ScalarType::kF16, ScalarType::kBF16, ScalarType::kF32}) {
      for (ScalarType dt : {ScalarType::kF32, ScalarType::kF16}) {
        for (uint32_t dim : {64u, 128u}) {
          const DigestCase c{32, 8,  dim,  37,
                             kt, dt, kind, kt == ScalarType::kF16 ? 60000.0f : 1e4f};
          std::vector<uint8_t> cpu, gpu;
          RunDigests(c, &cpu, &gpu);
          ASSERT_EQ(cpu.size(), gpu.size());
          for (size_t i = 0; i < cpu.size() / ScalarBytes(dt); ++i) {
            const float x = LoadAsFloat(cpu.data(), dt, i);
            const float y = LoadAsFloat(gpu.data(), dt, i);
            if (kind == DigestKind::kMinMax) {
              ASSERT_EQ(x, y) << i;  // exact: no arithmetic
            } else {
              ASSERT_NEAR(x, y, 1e-5f * std::abs(x) + 1e-6f * c.outlier) << i;
            }
          }
        }
      }
    }
  }
}

TEST_F(CudaSelectTest, EstimateMatchesCpuOnLongBatches) {
  // 3 sequences up to 128K tokens (8192 pages of 16; blocks of pages
  // straddle the sequences), GQA 1, 4, 8; vector loads (head_dim 64, 128)
  // and scalar ones (82: not a multiple of 4); fp16 and fp32 cuboids and
  // fp32 centroids.
  struct Digests {
    DigestKind kind;
    ScalarType type;
  };
  for (const Digests dg : {Digests{DigestKind::kMinMax, ScalarType::kF16},
                           Digests{DigestKind::kMinMax, ScalarType::kF32},
                           Digests{DigestKind::kCentroid, ScalarType::kF32}}) {
    for (uint32_t group : {1u, 4u, 8u}) {
      for (uint32_t dim : {64u, 128u, 82u}) {
        const uint32_t hkv = 4, hq = hkv * group;
        const std::vector<int32_t> indptr = {0, 8192, 8192 + 17, 8192 + 17 + 1000};
        const uint32_t total = indptr.back();
        const size_t slot_elems = DigestSlotElements(dg.kind, hkv, dim);
        const testing::TypedBuffer digests = testing::MakeTyped(
            testing::AdversarialFloats(total * slot_elems, dim + group, 100.0f), dg.type);
        const testing::TypedBuffer queries = testing::MakeTyped(
            testing::RandomFloats(3 * hq * dim, group, -2.0f, 2.0f), ScalarType::kBF16);
        std::vector<int32_t> slots(total);
        for (uint32_t p = 0; p < total; ++p) slots[p] = static_cast<int32_t>(total - 1 - p);
        for (HeadReduce reduce : {HeadReduce::kGroupSum, HeadReduce::kPerQueryHead}) {
          EstimateArgs a;
          a.query_type = ScalarType::kBF16;
          a.batch = 3;
          a.n_q_heads = hq;
          a.n_kv_heads = hkv;
          a.head_dim = dim;
          a.digest_type = dg.type;
          a.kind = dg.kind;
          a.digest_capacity = total;
          a.total_pages = total;
          a.reduce = reduce;
          std::vector<float> cpu(size_t{total} * a.rows());
          a.queries = queries.data();
          a.digests = digests.data();
          a.page_indptr = indptr.data();
          a.digest_slots = slots.data();
          a.scores = cpu.data();
          ThreadPool pool(0);
          ASSERT_TRUE(EstimateScoresCpu(a, &pool).ok());
          DeviceBuffer dq = Upload(queries.bytes), dd = Upload(digests.bytes),
                       di = Upload(indptr), ds = Upload(slots);
          DeviceBuffer dout(cpu.size() * sizeof(float));
          const std::vector<float> poison(cpu.size(), NAN);
          ASSERT_EQ(cudaMemcpy(dout.get(), poison.data(), dout.bytes(), cudaMemcpyHostToDevice),
                    cudaSuccess);
          a.queries = dq.get();
          a.digests = dd.get();
          a.page_indptr = di.as<int32_t>();
          a.digest_slots = ds.as<int32_t>();
          a.scores = dout.as<float>();
          ASSERT_TRUE(EstimateScoresCuda(a, nullptr).ok());
          ASSERT_TRUE(testing::Sync().ok());
          const std::vector<float> gpu = Download<float>(dout, cpu.size());
          // Both sum d products of magnitude <= 2 * 100 in fp32, in different
          // orders: allow d * 2^-22 of the largest possible magnitude per head.
          const float tol = dim * 2.0f * 100.0f * group * std::ldexp(1.0f, -20);
          for (size_t i = 0; i < cpu.size(); ++i) ASSERT_NEAR(cpu[i], gpu[i], tol) << i;
        }
      }
    }
  }
}

TEST_F(CudaSelectTest, TopKIsIdenticalToCpu) {
  std::mt19937 rng(5);
  for (int rep = 0; rep < 40; ++rep) {
    const uint32_t batch = 1 + rng() % 4, rows = 1 + rng() % 8;
    std::vector<int32_t> indptr = {0};
    for (uint32_t b = 0; b < batch; ++b) {
      // 20000 candidates overflow the kernel's shared-memory keys.
      const int32_t long_list = rep % 8 == 4 ? 20000 : 8192;
      indptr.push_back(indptr.back() +
                       (rep % 4 == 0 ? long_list : static_cast<int32_t>(rng() % 600)));
    }
    const uint32_t total = indptr.back();
    std::vector<float> scores(size_t{total} * rows);
    const int range = rep % 2 ? 4 : 100000;  // many ties, or few
    for (float& s : scores) {
      const int r = static_cast<int>(rng() % (range + 2));
      s = r == range ? NAN : (r == range + 1 ? -0.0f : static_cast<float>(r - range / 2));
    }
    TopKArgs a;
    a.batch = batch;
    a.total_pages = total;
    a.n_rows = rows;
    a.sum_rows = rep % 3 == 0;
    a.k = 1 + rng() % (rep % 5 == 0 ? 3000 : 300);
    a.sink = rng() % (a.k + 1);
    a.recent = rng() % (a.k - a.sink + 1);
    const size_t out = size_t{batch} * a.out_rows();
    std::vector<int32_t> sel(out * a.k), cnt(out);
    a.scores = scores.data();
    a.page_indptr = indptr.data();
    a.selected = sel.data();
    a.counts = cnt.data();
    ASSERT_TRUE(SelectTopKCpu(a, nullptr).ok());
    DeviceBuffer ds = Upload(scores), di = Upload(indptr);
    DeviceBuffer dsel(sel.size() * sizeof(int32_t)), dcnt(cnt.size() * sizeof(int32_t));
    a.scores = ds.as<float>();
    a.page_indptr = di.as<int32_t>();
    a.selected = dsel.as<int32_t>();
    a.counts = dcnt.as<int32_t>();
    ASSERT_TRUE(SelectTopKCuda(a, nullptr).ok());
    ASSERT_TRUE(testing::Sync().ok());
    ASSERT_EQ(Download<int32_t>(dsel, sel.size()), sel) << rep;
    ASSERT_EQ(Download<int32_t>(dcnt, cnt.size()), cnt) << rep;
  }
}

}  // namespace
}  // namespace kvtier::kernels
